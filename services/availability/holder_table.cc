#include "services/availability/holder_table.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

namespace sidecar::availability {
namespace {

constexpr size_t kWordsPerRank = 8;

size_t Words(size_t rows) { return (rows + 63) / 64; }

}  // namespace

HolderTable::HolderTable() : rows_(std::make_shared<EntrySet>()) {}

void HolderTable::Column::BuildRanks() {
  ranks.assign((bits.size() + kWordsPerRank - 1) / kWordsPerRank, 0);
  uint32_t sum = 0;
  for (size_t w = 0; w < bits.size(); ++w) {
    if (w % kWordsPerRank == 0) ranks[w / kWordsPerRank] = sum;
    sum += static_cast<uint32_t>(__builtin_popcountll(bits[w]));
  }
}

size_t HolderTable::Column::Rank(size_t row) const {
  const size_t word = row / 64;
  size_t r = ranks[word / kWordsPerRank];
  for (size_t w = word - word % kWordsPerRank; w < word; ++w) {
    r += static_cast<size_t>(__builtin_popcountll(bits[w]));
  }
  const uint64_t below = (uint64_t{1} << (row % 64)) - 1;
  return r + static_cast<size_t>(__builtin_popcountll(bits[word] & below));
}

std::shared_ptr<const HolderTable::Seqs> HolderTable::Seqs::Of(
    std::vector<uint64_t> seqs) {
  auto out = std::make_shared<Seqs>();
  if (seqs.empty()) return out;
  auto [lo, hi] = std::minmax_element(seqs.begin(), seqs.end());
  if (*hi - *lo > std::numeric_limits<uint32_t>::max()) {
    out->wide = std::move(seqs);
    return out;
  }
  out->base = *lo;
  out->narrow.reserve(seqs.size());
  for (uint64_t q : seqs)
    out->narrow.push_back(static_cast<uint32_t>(q - out->base));
  return out;
}

void HolderTable::Column::SetMoved(const Column& was,
                                   const std::vector<uint32_t>& moved) {
  for (size_t w = 0; w < was.bits.size(); ++w) {
    for (uint64_t word = was.bits[w]; word != 0; word &= word - 1) {
      Set(moved[w * 64 + static_cast<size_t>(__builtin_ctzll(word))]);
    }
  }
  seqs = was.seqs;  // the same rows, in the same order
}

std::vector<uint64_t> HolderTable::HeldByOthers(Slot slot) const {
  std::vector<uint64_t> held(Words(rows_->size()), 0);
  for (size_t c = 0; c < columns_.size(); ++c) {
    if (c == slot) continue;
    const std::vector<uint64_t>& bits = columns_[c].bits;
    for (size_t w = 0; w < bits.size(); ++w) held[w] |= bits[w];
  }
  return held;
}

Entry HolderTable::RecordOf(const Entry& e) { return WithSeq(e, 0); }

bool HolderTable::RowLess(const Entry& a, const Entry& b) {
  if (KeyLess(a, b)) return true;
  if (KeyLess(b, a)) return false;
  if (int c = std::memcmp(a.sha256.data(), b.sha256.data(), a.sha256.size());
      c != 0) {
    return c < 0;
  }
  return a.size_bits < b.size_bits;
}

size_t HolderTable::count(Slot slot) const {
  return slot < columns_.size() ? columns_[slot].seqs->size() : 0;
}

std::optional<Entry> HolderTable::Find(Slot slot, const EntryKey& key) const {
  return FindFrom(slot, key, rows_->LowerBound(key));
}

std::optional<Entry> HolderTable::FindFrom(Slot slot, const EntryKey& key,
                                           size_t first) const {
  if (slot >= columns_.size()) return std::nullopt;
  const Column& c = columns_[slot];
  const Entries& rows = rows_->entries();
  for (size_t r = first; r < rows.size() && KeyEqual(rows[r], key); ++r) {
    if (c.Holds(r)) return WithSeq(rows[r], c.seqs->at(c.Rank(r)));
  }
  return std::nullopt;
}

void HolderTable::FirstRows(absl::Span<const std::optional<EntryKey>> keys,
                            uint32_t* out) const {
  const Entries& rows = rows_->entries();
  std::vector<const Entry*> found(keys.size());
  // Find gives the first entry of a key among several.
  rows_->FindMany(keys, found.data());
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i] = found[i] == nullptr
                 ? static_cast<uint32_t>(rows.size())
                 : static_cast<uint32_t>(found[i] - rows.data());
  }
}

Entries HolderTable::EntriesOf(Slot slot) const {
  Entries out;
  ReserveEntries(&out, count(slot));
  ForEach(slot, [&](const Entry& e) { out.push_back(e); });
  return out;
}

HolderTable HolderTable::WithOrigin(Slot slot, const Entries& sorted) const {
  const Entries& old_rows = rows_->entries();
  const size_t n_columns = std::max<size_t>(columns_.size(), slot + 1);
  // Rows another slot holds stay; the others go unless `sorted` has them.
  const std::vector<uint64_t> kept = HeldByOthers(slot);
  size_t n_kept = 0;
  for (uint64_t w : kept)
    n_kept += static_cast<size_t>(__builtin_popcountll(w));

  auto kept_row = [&](size_t i) { return (kept[i / 64] >> (i % 64)) & 1; };
  // The merge of the kept old rows and `sorted`, in row order: calls
  // emit(old row index or -1, index in sorted or -1) once per new row.
  auto merge = [&](auto&& emit) {
    size_t i = 0, j = 0;
    while (i < old_rows.size() || j < sorted.size()) {
      if (i < old_rows.size() && !kept_row(i)) {
        ++i;  // no other slot holds it; `sorted` brings it back if it has it
        continue;
      }
      const bool take_old =
          j == sorted.size() ||
          (i < old_rows.size() && !RowLess(sorted[j], old_rows[i]));
      const bool take_new =
          i == old_rows.size() ||
          (j < sorted.size() && !RowLess(old_rows[i], sorted[j]));
      emit(take_old ? static_cast<ptrdiff_t>(i++) : -1,
           take_new ? static_cast<ptrdiff_t>(j++) : -1);
    }
  };
  // The rows take exactly their room: over a million rows, an array
  // reserved for kept + new rows would waste 64 MB where they are the same
  // sidecars. Without kept rows, every entry of `sorted` is a row.
  size_t n_rows = sorted.size();
  if (n_kept > 0) {
    n_rows = 0;
    merge([&](ptrdiff_t, ptrdiff_t) { ++n_rows; });
  }

  // The new column's seqs, written in the merge: narrow if they span less
  // than 2^32.
  auto seqs = std::make_shared<Seqs>();
  if (!sorted.empty()) {
    uint64_t lo = sorted[0].seq(), hi = lo;
    for (const Entry& e : sorted) {
      lo = std::min(lo, e.seq());
      hi = std::max(hi, e.seq());
    }
    if (hi - lo > std::numeric_limits<uint32_t>::max()) {
      seqs->wide.reserve(sorted.size());
    } else {
      seqs->base = lo;
      seqs->narrow.reserve(sorted.size());
    }
  }
  const bool wide = seqs->wide.capacity() > 0;

  HolderTable out;
  out.columns_.resize(n_columns);
  const size_t words = Words(n_rows);
  for (Column& col : out.columns_) col.bits.assign(words, 0);
  Column& mine = out.columns_[slot];
  Entries rows;
  ReserveEntries(&rows, n_rows);
  // Where each kept old row went.
  std::vector<uint32_t> moved(n_kept > 0 ? old_rows.size() : 0,
                              std::numeric_limits<uint32_t>::max());
  merge([&](ptrdiff_t i, ptrdiff_t j) {
    const size_t at = rows.size();
    if (i >= 0) {
      rows.push_back(old_rows[i]);
      moved[i] = static_cast<uint32_t>(at);
    } else {
      rows.push_back(RecordOf(sorted[j]));
    }
    if (j >= 0) {
      const uint64_t seq = sorted[j].seq();
      if (wide) {
        seqs->wide.push_back(seq);
      } else {
        seqs->narrow.push_back(static_cast<uint32_t>(seq - seqs->base));
      }
      mine.Set(at);
    }
  });
  mine.seqs = std::move(seqs);

  for (size_t c = 0; c < n_columns; ++c) {
    Column& col = out.columns_[c];
    if (c != slot && c < columns_.size()) {
      col.SetMoved(columns_[c], moved);
    }
    col.BuildRanks();
  }
  out.rows_ = std::make_shared<EntrySet>(std::move(rows));
  return out;
}

HolderTable HolderTable::WithChanges(Slot slot, const Entries& changes) const {
  if (slot >= columns_.size()) return WithOrigin(slot, changes);
  const Entries& old_rows = rows_->entries();
  const Column& was = columns_[slot];
  const std::vector<uint64_t> others = HeldByOthers(slot);
  auto other_holds = [&](size_t i) { return (others[i / 64] >> (i % 64)) & 1; };

  Entries rows;
  // At most the old rows and one new row per change; a few rows more than
  // needed at worst, as changes are few.
  ReserveEntries(&rows, old_rows.size() + changes.size());
  std::vector<uint32_t> moved(old_rows.size(),
                              std::numeric_limits<uint32_t>::max());
  std::vector<uint32_t> held;  // rows the slot holds, ascending
  std::vector<uint64_t> seqs;  // their seqs
  held.reserve(was.seqs->size() + changes.size());
  seqs.reserve(was.seqs->size() + changes.size());
  size_t k_old = 0;                 // the slot's seqs passed
  const Entry* replaced = nullptr;  // the last change taken: its key's
                                    // other rows are no longer the slot's
  auto take_change = [&](size_t j, ptrdiff_t same_row) {
    const uint32_t at = static_cast<uint32_t>(rows.size());
    if (same_row >= 0) {
      rows.push_back(old_rows[same_row]);
      moved[same_row] = at;
    } else {
      rows.push_back(RecordOf(changes[j]));
    }
    held.push_back(at);
    seqs.push_back(changes[j].seq());
    replaced = &changes[j];
  };
  size_t i = 0, j = 0;
  while (i < old_rows.size() || j < changes.size()) {
    if (j < changes.size() &&
        (i == old_rows.size() || !RowLess(old_rows[i], changes[j]))) {
      // The change comes first in row order, or is this very row.
      const bool same =
          i < old_rows.size() && !RowLess(changes[j], old_rows[i]);
      if (same) {
        if (was.Holds(i)) ++k_old;
        take_change(j, static_cast<ptrdiff_t>(i++));
      } else {
        take_change(j, -1);
      }
      ++j;
      continue;
    }
    // An old row before the next change.
    const bool mine = was.Holds(i);
    const bool replaced_here =
        (replaced != nullptr &&
         KeyEqual(old_rows[i], EntryKey::Of(*replaced))) ||
        (j < changes.size() && KeyEqual(old_rows[i], EntryKey::Of(changes[j])));
    const bool stays_mine = mine && !replaced_here;
    if (stays_mine || other_holds(i)) {
      const uint32_t at = static_cast<uint32_t>(rows.size());
      rows.push_back(old_rows[i]);
      moved[i] = at;
      if (stays_mine) {
        held.push_back(at);
        seqs.push_back(was.seqs->at(k_old));
      }
    }
    if (mine) ++k_old;
    ++i;
  }

  HolderTable out;
  out.columns_.resize(columns_.size());
  const size_t words = Words(rows.size());
  for (size_t c = 0; c < columns_.size(); ++c) {
    Column& col = out.columns_[c];
    col.bits.assign(words, 0);
    if (c == slot) {
      for (uint32_t r : held) col.Set(r);
      col.seqs = Seqs::Of(std::move(seqs));
    } else {
      col.SetMoved(columns_[c], moved);
    }
    col.BuildRanks();
  }
  out.rows_ = std::make_shared<EntrySet>(std::move(rows));
  return out;
}

}  // namespace sidecar::availability
