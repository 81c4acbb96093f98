#include "services/availability/entry_set.h"

#include <sys/mman.h>

#include <algorithm>

namespace sidecar::availability {

void ReserveEntries(Entries* entries, size_t n) {
  entries->reserve(n);
  constexpr uintptr_t kHuge = 2 << 20;
  const size_t bytes = entries->capacity() * sizeof(Entry);
  if (bytes < 4 * kHuge) return;
  // The whole huge pages inside the array; the kernel may decline (THP
  // off), which only costs the page faults it would have saved.
  uintptr_t begin = reinterpret_cast<uintptr_t>(entries->data());
  uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1);
  uintptr_t last = (begin + bytes) & ~(kHuge - 1);
  if (last > first) {
    madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
}

EntrySet::EntrySet(Entries sorted) : entries_(std::move(sorted)) {
  // About eight entries per bucket; at most 2^18 buckets (1 MiB).
  size_t n = entries_.size();
  while (bits_ < 18 && (size_t{8} << bits_) < n) ++bits_;
  const uint32_t buckets = uint32_t{1} << bits_;
  starts_.assign(buckets + 1, static_cast<uint32_t>(n));
  uint32_t next = 0;  // first bucket not yet started
  for (uint32_t i = 0; i < n; ++i) {
    uint32_t b = Bucket(entries_[i].content);
    while (next <= b) starts_[next++] = i;
  }
}

uint32_t EntrySet::Bucket(const Uuid& u) const {
  if (bits_ == 0) return 0;
  uint32_t top = uint32_t{u.bytes[0]} << 24 | uint32_t{u.bytes[1]} << 16 |
                 uint32_t{u.bytes[2]} << 8 | u.bytes[3];
  return top >> (32 - bits_);
}

size_t EntrySet::LowerBound(const EntryKey& key) const {
  uint32_t b = Bucket(key.content);
  auto first = entries_.begin() + starts_[b];
  auto last = entries_.begin() + starts_[b + 1];
  // Entries of later buckets are all greater, so `last` bounds it.
  return std::lower_bound(
             first, last, key,
             [](const Entry& e, const EntryKey& k) { return KeyLess(e, k); }) -
         entries_.begin();
}

const Entry* EntrySet::Find(const EntryKey& key) const {
  size_t i = LowerBound(key);
  if (i < entries_.size() && KeyEqual(entries_[i], key)) return &entries_[i];
  return nullptr;
}

void EntrySet::FindMany(absl::Span<const std::optional<EntryKey>> keys,
                        const Entry** out) const {
  constexpr size_t kGroup = 16;
  uint32_t bucket[kGroup];
  for (size_t base = 0; base < keys.size(); base += kGroup) {
    const size_t n = std::min(kGroup, keys.size() - base);
    for (size_t j = 0; j < n; ++j) {
      const auto& k = keys[base + j];
      bucket[j] = k ? Bucket(k->content) : 0;
      __builtin_prefetch(&starts_[bucket[j]]);
    }
    for (size_t j = 0; j < n; ++j) {
      uint32_t first = starts_[bucket[j]];
      if (first < entries_.size()) {
        const char* p = reinterpret_cast<const char*>(&entries_[first]);
        __builtin_prefetch(p);
        __builtin_prefetch(p + 256);
      }
    }
    for (size_t j = 0; j < n; ++j) {
      const auto& k = keys[base + j];
      out[base + j] = k ? Find(*k) : nullptr;
    }
  }
}

}  // namespace sidecar::availability
