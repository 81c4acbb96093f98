#include "common/pairing_code.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include <cstdlib>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sidecar {
namespace {

constexpr char kCrockford[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
constexpr int kCodeChars = 16;  // 80 bits / 5 bits per character

constexpr absl::string_view kInviterLabel = "sidecar-pair-inviter";
constexpr absl::string_view kJoinLabel = "sidecar-pair-join";
constexpr absl::string_view kAcceptLabel = "sidecar-pair-accept";

// The value of one typed character (already uppercased), or -1. Crockford's
// aliases let a person type O for 0 and I or L for 1. U is not in the
// alphabet and has no alias, so it is rejected like any other stray letter.
int CodeValue(char c) {
  if (c == 'O') return 0;
  if (c == 'I' || c == 'L') return 1;
  for (int i = 0; i < 32; ++i)
    if (kCrockford[i] == c) return i;
  return -1;
}

absl::string_view Bytes(const Sha256Digest& d) {
  return {reinterpret_cast<const char*>(d.data()), d.size()};
}

// HMAC-SHA256 keyed with the 5-byte secret over label || a || b (b may be
// empty).
std::string Mac(const std::array<uint8_t, 5>& secret, absl::string_view label,
                absl::string_view a, absl::string_view b) {
  std::string msg = absl::StrCat(label, a, b);
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int out_len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out,
           &out_len) == nullptr ||
      out_len != 32) {
    // HMAC-SHA256 only fails when OpenSSL itself is broken; a wrong proof
    // would silently break pairing, so stop instead.
    std::abort();
  }
  return std::string(reinterpret_cast<const char*>(out), out_len);
}

std::array<uint8_t, 5> InviterTag(const std::array<uint8_t, 5>& secret,
                                  const Sha256Digest& inviter_key_sha256) {
  std::string mac = Mac(secret, kInviterLabel, Bytes(inviter_key_sha256), {});
  std::array<uint8_t, 5> tag;
  std::memcpy(tag.data(), mac.data(), tag.size());
  return tag;
}

}  // namespace

PairingCode PairingCode::Make(const Sha256Digest& inviter_key_sha256) {
  PairingCode code;
  if (RAND_bytes(code.secret.data(), static_cast<int>(code.secret.size())) !=
      1) {
    // Without a working CSPRNG a code would be guessable.
    std::abort();
  }
  code.tag = InviterTag(code.secret, inviter_key_sha256);
  return code;
}

absl::StatusOr<PairingCode> PairingCode::Parse(absl::string_view text) {
  auto bad = [] {
    return absl::InvalidArgumentError(
        "a pairing code is 16 letters and digits, e.g. 7KQ2-M9XD-4HTV-B1ZR "
        "(as `sidecarctl pair invite` printed it)");
  };
  uint8_t bits[10] = {};
  int n = 0;
  for (char c : text) {
    if (c == '-' || c == ' ') continue;
    if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    int v = CodeValue(c);
    if (v < 0 || n >= kCodeChars) return bad();
    // Character n holds bits [5n, 5n + 5) of the 80, most significant first.
    for (int i = 0; i < 5; ++i) {
      if (v & (0x10 >> i)) {
        int bit = 5 * n + i;
        bits[bit / 8] |= static_cast<uint8_t>(0x80 >> (bit % 8));
      }
    }
    ++n;
  }
  if (n != kCodeChars) return bad();
  PairingCode code;
  std::memcpy(code.secret.data(), bits, 5);
  std::memcpy(code.tag.data(), bits + 5, 5);
  return code;
}

std::string PairingCode::ToString() const {
  uint8_t bits[10];
  std::memcpy(bits, secret.data(), 5);
  std::memcpy(bits + 5, tag.data(), 5);
  std::string out;
  out.reserve(kCodeChars + 3);
  for (int n = 0; n < kCodeChars; ++n) {
    if (n > 0 && n % 4 == 0) out.push_back('-');
    int v = 0;
    for (int i = 0; i < 5; ++i) {
      int bit = 5 * n + i;
      v = v << 1 | ((bits[bit / 8] >> (7 - bit % 8)) & 1);
    }
    out.push_back(kCrockford[v]);
  }
  return out;
}

bool PairingCode::MatchesInviter(const Sha256Digest& inviter_key_sha256) const {
  std::array<uint8_t, 5> expected = InviterTag(secret, inviter_key_sha256);
  // Constant time, so that timing does not tell a prober how close it got.
  return CRYPTO_memcmp(expected.data(), tag.data(), tag.size()) == 0;
}

std::string PairingCode::JoinProof(
    const Sha256Digest& joiner_key_sha256,
    const Sha256Digest& inviter_key_sha256) const {
  return Mac(secret, kJoinLabel, Bytes(joiner_key_sha256),
             Bytes(inviter_key_sha256));
}

std::string PairingCode::AcceptProof(
    const Sha256Digest& inviter_key_sha256,
    const Sha256Digest& joiner_key_sha256) const {
  return Mac(secret, kAcceptLabel, Bytes(inviter_key_sha256),
             Bytes(joiner_key_sha256));
}

bool ProofsEqual(absl::string_view a, absl::string_view b) {
  // The length of a proof is public (always 32), so only the bytes need
  // constant-time comparison.
  if (a.size() != b.size()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace sidecar
