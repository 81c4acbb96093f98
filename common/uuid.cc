#include "common/uuid.h"

#include <openssl/rand.h>

#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sidecar {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

constexpr char kHex[] = "0123456789abcdef";

}  // namespace

absl::StatusOr<Uuid> Uuid::Parse(absl::string_view text) {
  auto bad = [&] {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed UUID \"", text.substr(0, 64),
                     "\": expected 36 characters like "
                     "550e8400-e29b-41d4-a716-446655440000"));
  };
  if (text.size() != 36) return bad();
  Uuid u;
  size_t out = 0;
  for (size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return bad();
      ++i;
      continue;
    }
    int hi = HexValue(text[i]), lo = HexValue(text[i + 1]);
    if (hi < 0 || lo < 0) return bad();
    u.bytes[out++] = static_cast<uint8_t>(hi << 4 | lo);
    i += 2;
  }
  return u;
}

absl::StatusOr<Uuid> Uuid::FromBytes(absl::string_view raw) {
  if (raw.size() != 16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device or content id must be 16 bytes, got ", raw.size()));
  }
  Uuid u;
  std::memcpy(u.bytes.data(), raw.data(), 16);
  return u;
}

Uuid Uuid::Random() {
  Uuid u;
  if (RAND_bytes(u.bytes.data(), 16) != 1) {
    // OpenSSL's RNG failing means the process cannot make identities safely.
    std::abort();
  }
  u.bytes[6] = (u.bytes[6] & 0x0f) | 0x40;
  u.bytes[8] = (u.bytes[8] & 0x3f) | 0x80;
  return u;
}

bool Uuid::IsNil() const {
  for (uint8_t b : bytes)
    if (b != 0) return false;
  return true;
}

std::string Uuid::ToHex() const {
  std::string s(32, '0');
  for (int i = 0; i < 16; ++i) {
    s[2 * i] = kHex[bytes[i] >> 4];
    s[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return s;
}

std::string Uuid::ToString() const {
  std::string hex = ToHex();
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-",
                      hex.substr(12, 4), "-", hex.substr(16, 4), "-",
                      hex.substr(20, 12));
}

}  // namespace sidecar
