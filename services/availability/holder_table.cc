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

std::shared_ptr<const HolderTable::Seqs> HolderTable::Seqs::Of(
    const std::vector<uint64_t>& seqs) {
  auto out = std::make_shared<Seqs>();
  if (seqs.empty()) return out;
  auto [lo, hi] = std::minmax_element(seqs.begin(), seqs.end());
  if (*hi - *lo > std::numeric_limits<uint32_t>::max()) {
    out->wide = seqs;
    return out;
  }
  out->base = *lo;
  out->narrow.reserve(seqs.size());
  for (uint64_t s : seqs) out->narrow.push_back(static_cast<uint32_t>(s - *lo));
  return out;
}

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
  if (slot >= columns_.size()) return std::nullopt;
  const Column& c = columns_[slot];
  const Entries& rows = rows_->entries();
  for (size_t r = rows_->LowerBound(key);
       r < rows.size() && KeyEqual(rows[r], key); ++r) {
    if (c.Holds(r)) return WithSeq(rows[r], c.seqs->at(c.Rank(r)));
  }
  return std::nullopt;
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
  std::vector<uint64_t> kept(Words(old_rows.size()), 0);
  for (size_t c = 0; c < columns_.size(); ++c) {
    if (c == slot) continue;
    const std::vector<uint64_t>& bits = columns_[c].bits;
    for (size_t w = 0; w < bits.size(); ++w) kept[w] |= bits[w];
  }

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
  // Counted first, so that the rows take exactly their room: over a
  // million rows, an array reserved for old + new rows would waste 64 MB.
  size_t n_rows = 0;
  merge([&](ptrdiff_t, ptrdiff_t) { ++n_rows; });

  Entries rows;
  ReserveEntries(&rows, n_rows);
  // Where each kept old row went.
  std::vector<uint32_t> moved(old_rows.size(),
                              std::numeric_limits<uint32_t>::max());
  std::vector<uint64_t> seqs;
  seqs.reserve(sorted.size());
  std::vector<uint32_t> mine;  // the rows `slot` holds, ascending
  mine.reserve(sorted.size());
  merge([&](ptrdiff_t i, ptrdiff_t j) {
    const uint32_t at = static_cast<uint32_t>(rows.size());
    if (i >= 0) {
      rows.push_back(old_rows[i]);
      moved[i] = at;
    } else {
      rows.push_back(RecordOf(sorted[j]));
    }
    if (j >= 0) {
      seqs.push_back(sorted[j].seq());
      mine.push_back(at);
    }
  });

  HolderTable out;
  out.columns_.resize(n_columns);
  const size_t words = Words(rows.size());
  for (size_t c = 0; c < n_columns; ++c) {
    Column& col = out.columns_[c];
    col.bits.assign(words, 0);
    if (c == slot) {
      for (uint32_t r : mine) col.Set(r);
      col.seqs = Seqs::Of(seqs);
    } else if (c < columns_.size()) {
      const Column& was = columns_[c];
      for (size_t w = 0; w < was.bits.size(); ++w) {
        for (uint64_t word = was.bits[w]; word != 0; word &= word - 1) {
          col.Set(moved[w * 64 + static_cast<size_t>(__builtin_ctzll(word))]);
        }
      }
      col.seqs = was.seqs;  // same rows, same order
    }
    col.BuildRanks();
  }
  out.rows_ = std::make_shared<EntrySet>(std::move(rows));
  return out;
}

}  // namespace sidecar::availability
