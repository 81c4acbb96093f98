// EntrySet: an immutable, key-sorted array of entries with a radix index on
// the leading bits of the content id. Content ids are spread uniformly, so a
// bucket holds a handful of entries and a lookup touches a few cache lines
// instead of the twenty of a binary search over a million entries. The index
// costs at most half a byte per entry.
#ifndef SIDECAR_SERVICES_AVAILABILITY_ENTRY_SET_H_
#define SIDECAR_SERVICES_AVAILABILITY_ENTRY_SET_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "services/availability/entry.h"

namespace sidecar::availability {

using Entries = std::vector<Entry>;

// Reserves room for `n` entries in an empty `entries`. A large array (a
// snapshot of a million entries is 64 MB) asks the kernel for transparent
// huge pages before it is filled, so that filling it takes one page fault
// per 2 MiB instead of one per 4 KiB.
void ReserveEntries(Entries* entries, size_t n);

class EntrySet {
 public:
  EntrySet() : EntrySet(Entries()) {}
  // REQUIRES: `sorted` is sorted by KeyLess, with one entry per key for
  // Find to be the key's only entry (it is the first of several).
  explicit EntrySet(Entries sorted);

  const Entries& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  bool empty() const { return entries_.empty(); }

  // The entry for `key` (live or tombstone), or nullptr. The first one, in
  // a set with several per key.
  const Entry* Find(const EntryKey& key) const;

  // The index of the first entry whose key is not less than `key`, or
  // size(): where the entries of `key` start, if it has any.
  size_t LowerBound(const EntryKey& key) const;

  // out[i] = Find(*keys[i]) (nullptr for nullopt keys): the first entry of
  // the key, in a set with several per key. Faster than calling
  // Find in a loop: memory for a group of keys is prefetched in stages, so
  // cache misses overlap instead of queueing.
  void FindMany(absl::Span<const std::optional<EntryKey>> keys,
                const Entry** out) const;

 private:
  uint32_t Bucket(const Uuid& u) const;

  Entries entries_;
  int bits_ = 0;
  // starts_[b] is the index of the first entry whose bucket is >= b;
  // 2^bits_ + 1 values.
  std::vector<uint32_t> starts_;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_ENTRY_SET_H_
