// Entry: one sidecar as an origin device advertises it, packed into 64 bytes.
// The peer cache holds millions of these, so every byte counts.
#ifndef SIDECAR_SERVICES_AVAILABILITY_ENTRY_H_
#define SIDECAR_SERVICES_AVAILABILITY_ENTRY_H_

#include <cstdint>
#include <cstring>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/status/statusor.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/uuid.h"
#include "sidecar/v1/sidecar.pb.h"

namespace sidecar::availability {

inline constexpr uint64_t kMaxEntrySize = (uint64_t{1} << 40) - 1;  // 1 TiB
inline constexpr uint64_t kMaxSeq = (uint64_t{1} << 48) - 1;
// Ids of GeneratorVersionDict: 11 bits.
inline constexpr uint16_t kMaxVersionId = (1u << 11) - 1;

// Kinds and formats take 6 bits each in an entry.
static_assert(v1::SidecarKind_MAX < 64 && v1::SidecarFormat_MAX < 64,
              "Entry packs kinds and formats in 6 bits");

struct Entry {
  Uuid content;         // 16
  Sha256Digest sha256;  // 32
  // size:40 | kind:6 | format:6 | removed:1 | generator version id:11
  uint64_t size_bits;
  uint64_t seq_bits;  // seq:48 | variant id:16

  // REQUIRES: kind and format valid, version <= kMaxVersionId.
  static Entry Make(const Uuid& content, Kind kind, Format format,
                    uint16_t variant, uint64_t size, const Sha256Digest& sha,
                    uint64_t seq, bool removed, uint16_t version = 0) {
    Entry e;
    e.content = content;
    e.sha256 = sha;
    e.size_bits =
        (size & kMaxEntrySize) |
        (uint64_t{static_cast<uint8_t>(kind) & 0x3fu} << 40) |
        (uint64_t{static_cast<uint8_t>(format) & 0x3fu} << 46) |
        (uint64_t{removed ? 1u : 0u} << 52) |
        (uint64_t{static_cast<uint16_t>(version & kMaxVersionId)} << 53);
    e.seq_bits = (seq & kMaxSeq) | (uint64_t{variant} << 48);
    return e;
  }

  uint64_t size() const { return size_bits & kMaxEntrySize; }
  Kind kind() const { return static_cast<Kind>((size_bits >> 40) & 0x3f); }
  Format format() const {
    return static_cast<Format>((size_bits >> 46) & 0x3f);
  }
  bool removed() const { return (size_bits >> 52) & 1; }
  // The id of the generator version in GeneratorVersionDict (0: none).
  uint16_t version() const {
    return static_cast<uint16_t>(size_bits >> 53) & kMaxVersionId;
  }
  uint64_t seq() const { return seq_bits & kMaxSeq; }
  uint16_t variant() const { return static_cast<uint16_t>(seq_bits >> 48); }
};
static_assert(sizeof(Entry) == 64, "cache entries must stay at 64 bytes");

// The part of an entry that identifies its sidecar, in cache sort order.
struct EntryKey {
  Uuid content;
  uint8_t kind;
  uint8_t format;
  uint16_t variant;

  static EntryKey Of(const Entry& e) {
    return {e.content, static_cast<uint8_t>(e.kind()),
            static_cast<uint8_t>(e.format()), e.variant()};
  }
  auto operator<=>(const EntryKey&) const = default;
  bool operator==(const EntryKey&) const = default;
};

// Order of the cache: content, kind, format, variant id (as EntryKey).
inline uint32_t KeyTail(const Entry& e) {
  return uint32_t{static_cast<uint8_t>(e.kind())} << 24 |
         uint32_t{static_cast<uint8_t>(e.format())} << 16 | e.variant();
}
inline uint32_t KeyTail(const EntryKey& k) {
  return uint32_t{k.kind} << 24 | uint32_t{k.format} << 16 | k.variant;
}
// The content id as two big-endian words, so comparisons are two integer
// compares instead of a call to memcmp.
inline std::pair<uint64_t, uint64_t> ContentWords(const Uuid& u) {
  uint64_t hi, lo;
  std::memcpy(&hi, u.bytes.data(), 8);
  std::memcpy(&lo, u.bytes.data() + 8, 8);
  return {__builtin_bswap64(hi), __builtin_bswap64(lo)};
}
inline bool KeyLess(const Entry& a, const Entry& b) {
  auto wa = ContentWords(a.content), wb = ContentWords(b.content);
  if (wa != wb) return wa < wb;
  return KeyTail(a) < KeyTail(b);
}
inline bool KeyLess(const Entry& a, const EntryKey& b) {
  auto wa = ContentWords(a.content), wb = ContentWords(b.content);
  if (wa != wb) return wa < wb;
  return KeyTail(a) < KeyTail(b);
}
inline bool KeyEqual(const Entry& a, const EntryKey& b) {
  return a.content == b.content && KeyTail(a) == KeyTail(b);
}

// Converts a validated key to an EntryKey, interning its variant.
absl::StatusOr<EntryKey> ToEntryKey(const SidecarKey& key);
// As ToEntryKey, but without adding to the variant dictionary: nullopt if the
// variant was never seen (then no cache entry can match).
std::optional<EntryKey> FindEntryKey(const SidecarKey& key);
// The generator version of an entry ("" if none was given).
absl::string_view GeneratorVersionOf(const Entry& e);
// The full key of an entry.
SidecarKey KeyOf(const Entry& e);
SidecarKey KeyOf(const EntryKey& k);

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_ENTRY_H_
