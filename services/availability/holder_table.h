// HolderTable: the entries of several origins, each distinct record stored
// once (issue 11, "one entry per key").
//
// A record is an Entry without its seq: content id, kind, format, variant,
// size, SHA-256, removed and generator version, which is what devices that
// hold copies of one sidecar have in common. The table keeps the distinct
// records of all its origins in one array of rows, sorted by key and then
// by record (a key has several rows only while its holders disagree), and
// per origin a column: which rows it holds (one bit per row), and in row
// order the seq at which it advertised each (4 bytes above the column's
// lowest seq; 8 if its seqs span more than 2^32). A key that five origins
// hold alike costs one 64-byte row, five bits and five seqs, about 85 bytes,
// where five per-origin arrays of entries cost 5 × 64.
//
// Immutable, so readers share one without a lock. A change makes a new
// table (WithOrigin) in one linear pass over the rows; the columns of other
// origins keep their seqs (shared) and get their bits remapped.
//
// Origins are numbered by slot (0, 1, ...), which the owner assigns; an
// empty column holds nothing and costs a few words.
#ifndef SIDECAR_SERVICES_AVAILABILITY_HOLDER_TABLE_H_
#define SIDECAR_SERVICES_AVAILABILITY_HOLDER_TABLE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/types/span.h"
#include "services/availability/entry.h"
#include "services/availability/entry_set.h"

namespace sidecar::availability {

class HolderTable {
 public:
  using Slot = uint32_t;

  HolderTable();

  // Distinct records held by any origin.
  size_t rows() const { return rows_->size(); }
  // Columns, empty ones included: every slot below this may be asked for.
  size_t columns() const { return columns_.size(); }
  // Entries (tombstones included) that `slot` holds; 0 past columns().
  size_t count(Slot slot) const;

  // A table in which `slot` holds exactly `sorted` and every other slot
  // what it holds here. Rows no slot holds any more are dropped. `slot`
  // may be at or past columns(); the columns in between are empty.
  // REQUIRES: `sorted` is sorted by KeyLess with one entry per key.
  HolderTable WithOrigin(Slot slot, const Entries& sorted) const;

  // A table in which `slot` holds what it holds here with `changes`
  // applied: each replaces the entry of its key, if there is one. Costs
  // one pass over the rows, not over the slot's entries: for small
  // changes. REQUIRES: `changes` sorted by KeyLess, one entry per key.
  HolderTable WithChanges(Slot slot, const Entries& changes) const;

  // The entry `slot` holds for `key` (live or tombstone), if any.
  std::optional<Entry> Find(Slot slot, const EntryKey& key) const;

  // For many keys and slots at once: out[i] is the index of the first row
  // of *keys[i] (rows() if it has none, or for nullopt), looked up once
  // for all slots, with memory prefetched in stages (EntrySet::FindMany).
  void FirstRows(absl::Span<const std::optional<EntryKey>> keys,
                 uint32_t* out) const;
  // The entry `slot` holds for `key`, whose rows start at `first`
  // (FirstRows), if any.
  std::optional<Entry> FindFrom(Slot slot, const EntryKey& key,
                                size_t first) const;

  // Calls fn(const Entry&) for each entry of `slot`, in key order.
  template <typename Fn>
  void ForEach(Slot slot, Fn&& fn) const {
    ForEachAfter(slot, nullptr, [&](const Entry& e) {
      fn(e);
      return true;
    });
  }
  // Calls fn(const Entry&) -> bool for each entry of `slot` whose key is
  // greater than `*after` (all if null), in key order, until it returns
  // false.
  template <typename Fn>
  void ForEachAfter(Slot slot, const EntryKey* after, Fn&& fn) const;
  // The entries of `slot`, in key order (as WithOrigin took them).
  Entries EntriesOf(Slot slot) const;

  // The record of `e`: the entry with its seq cleared.
  static Entry RecordOf(const Entry& e);
  // Row order: KeyLess, then the record's checksum, size, removed and
  // version (the variant is part of the key).
  static bool RowLess(const Entry& a, const Entry& b);

 private:
  // The seqs of one column, in row order.
  struct Seqs {
    uint64_t base = 0;
    std::vector<uint32_t> narrow;  // seq - base, unless `wide` is used
    std::vector<uint64_t> wide;    // the seqs, if they span 2^32 or more

    size_t size() const { return wide.empty() ? narrow.size() : wide.size(); }
    uint64_t at(size_t i) const {
      return wide.empty() ? base + narrow[i] : wide[i];
    }
    // Narrow if they span less than 2^32.
    static std::shared_ptr<const Seqs> Of(std::vector<uint64_t> seqs);
  };
  struct Column {
    std::vector<uint64_t> bits;   // bit r: holds row r
    std::vector<uint32_t> ranks;  // set bits before each block of 8 words
    std::shared_ptr<const Seqs> seqs = std::make_shared<Seqs>();

    bool Holds(size_t row) const {
      return row / 64 < bits.size() && (bits[row / 64] >> (row % 64)) & 1;
    }
    // Set bits before `row`: the index of its seq. REQUIRES: ranks built.
    size_t Rank(size_t row) const;
    void Set(size_t row) { bits[row / 64] |= uint64_t{1} << (row % 64); }
    // Sets the bits `was` had, each row r moved to moved[r], and shares its
    // seqs. REQUIRES: bits sized for the new rows.
    void SetMoved(const Column& was, const std::vector<uint32_t>& moved);
    void BuildRanks();
  };

  // Bit r: some slot other than `slot` holds row r.
  std::vector<uint64_t> HeldByOthers(Slot slot) const;

  static Entry WithSeq(const Entry& record, uint64_t seq) {
    Entry e = record;
    e.seq_bits = (e.seq_bits & ~kMaxSeq) | (seq & kMaxSeq);
    return e;
  }

  std::shared_ptr<const EntrySet> rows_;
  std::vector<Column> columns_;
};

template <typename Fn>
void HolderTable::ForEachAfter(Slot slot, const EntryKey* after,
                               Fn&& fn) const {
  if (slot >= columns_.size()) return;
  const Column& c = columns_[slot];
  const Entries& rows = rows_->entries();
  size_t row = 0;
  if (after != nullptr) {
    row = rows_->LowerBound(*after);
    while (row < rows.size() && KeyEqual(rows[row], *after)) ++row;
  }
  if (row >= rows.size()) return;
  size_t k = c.Rank(row);
  for (size_t w = row / 64; w < c.bits.size(); ++w) {
    uint64_t word = c.bits[w];
    if (w == row / 64) word &= ~((uint64_t{1} << (row % 64)) - 1);
    for (; word != 0; word &= word - 1) {
      size_t r = w * 64 + static_cast<size_t>(__builtin_ctzll(word));
      if (!fn(WithSeq(rows[r], c.seqs->at(k++)))) return;
    }
  }
}

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_HOLDER_TABLE_H_
