// A 16-byte UUID value type: parse, format, generate.
#ifndef SIDECAR_COMMON_UUID_H_
#define SIDECAR_COMMON_UUID_H_

#include <array>
#include <compare>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sidecar {

struct Uuid {
  std::array<uint8_t, 16> bytes{};

  // Parses the canonical 8-4-4-4-12 hex form (either case). Anything else,
  // including braces or missing hyphens, is INVALID_ARGUMENT.
  static absl::StatusOr<Uuid> Parse(absl::string_view text);
  // Reads 16 raw bytes (wire form). Any other length is INVALID_ARGUMENT.
  static absl::StatusOr<Uuid> FromBytes(absl::string_view raw);
  // A random version-4 UUID from OpenSSL's CSPRNG.
  static Uuid Random();

  bool IsNil() const;
  // Lowercase hyphenated form.
  std::string ToString() const;
  // Lowercase hex without hyphens (32 chars), as the path layout shards by.
  std::string ToHex() const;
  absl::string_view AsBytes() const {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }

  auto operator<=>(const Uuid&) const = default;
  bool operator==(const Uuid&) const = default;

  template <typename H>
  friend H AbslHashValue(H h, const Uuid& u) {
    return H::combine_contiguous(std::move(h), u.bytes.data(), u.bytes.size());
  }
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_UUID_H_
