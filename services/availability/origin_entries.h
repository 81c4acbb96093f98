// OriginEntries: what one origin advertises (tombstones included), as
// readers see it: either an array of its own (an EntrySet), or its column of
// a HolderTable that the remote origins of a cache share, each distinct
// record stored once.
//
// A value: copying it copies two shared pointers, and the entries it
// points to never change, so a reader needs no lock while it reads.
// Entries read from a column are made on the way (an Entry by value), so
// its methods hand out entries by value, not pointers into storage.
#ifndef SIDECAR_SERVICES_AVAILABILITY_ORIGIN_ENTRIES_H_
#define SIDECAR_SERVICES_AVAILABILITY_ORIGIN_ENTRIES_H_

#include <memory>
#include <optional>
#include <utility>

#include "services/availability/entry.h"
#include "services/availability/entry_set.h"
#include "services/availability/holder_table.h"

namespace sidecar::availability {

class OriginEntries {
 public:
  // No entries.
  OriginEntries() : array_(std::make_shared<const EntrySet>()) {}
  // An array of its own.
  explicit OriginEntries(std::shared_ptr<const EntrySet> array)
      : array_(std::move(array)) {}
  // Column `slot` of `table`.
  OriginEntries(std::shared_ptr<const HolderTable> table,
                HolderTable::Slot slot)
      : table_(std::move(table)), slot_(slot) {}

  size_t size() const { return array_ ? array_->size() : table_->count(slot_); }
  bool empty() const { return size() == 0; }

  // The entry for `key` (live or tombstone), if any.
  std::optional<Entry> Find(const EntryKey& key) const;

  // Calls fn(const Entry&) for each entry, in key order.
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    if (array_) {
      for (const Entry& e : array_->entries()) fn(e);
    } else {
      table_->ForEach(slot_, fn);
    }
  }
  // Calls fn(const Entry&) -> bool for each entry whose key is greater than
  // `*after` (all if null), in key order, until it returns false.
  template <typename Fn>
  void ForEachAfter(const EntryKey* after, Fn&& fn) const;

  // The entries, in key order, as an array: the own array (no copy) or one
  // made from the column.
  std::shared_ptr<const EntrySet> Array() const;
  // The own array, or null for a column.
  const EntrySet* array() const { return array_.get(); }
  // The table and slot of a column (null table for an array).
  const std::shared_ptr<const HolderTable>& table() const { return table_; }
  HolderTable::Slot slot() const { return slot_; }

  // Whether both are the same entries (the same array or table and slot).
  bool SameAs(const OriginEntries& o) const {
    return array_ == o.array_ && table_ == o.table_ && slot_ == o.slot_;
  }

 private:
  std::shared_ptr<const EntrySet> array_;  // or
  std::shared_ptr<const HolderTable> table_;
  HolderTable::Slot slot_ = 0;
};

template <typename Fn>
void OriginEntries::ForEachAfter(const EntryKey* after, Fn&& fn) const {
  if (!array_) {
    table_->ForEachAfter(slot_, after, fn);
    return;
  }
  const Entries& es = array_->entries();
  size_t i = 0;
  if (after != nullptr) {
    i = array_->LowerBound(*after);
    if (i < es.size() && KeyEqual(es[i], *after)) ++i;
  }
  for (; i < es.size(); ++i) {
    if (!fn(es[i])) return;
  }
}

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_ORIGIN_ENTRIES_H_
