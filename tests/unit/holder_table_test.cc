// HolderTable against the simplest model of it: one sorted array of entries
// per slot. Random origins over a shared pool of keys, with copies (same
// record), disagreements (another checksum or size), tombstones and
// replacements, must read back exactly as the model, with each distinct
// record stored once.
#include "services/availability/holder_table.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "services/availability/origin_table.h"

namespace sidecar::availability {
namespace {

Uuid Content(uint32_t n) {
  Uuid u;
  // Spread over the leading bytes, as random ids are, and the radix index.
  uint32_t h = n * 2654435761u;
  u.bytes[0] = static_cast<uint8_t>(h >> 24);
  u.bytes[1] = static_cast<uint8_t>(h >> 16);
  u.bytes[14] = static_cast<uint8_t>(n >> 8);
  u.bytes[15] = static_cast<uint8_t>(n);
  return u;
}

// Key `key` (two variants per content id), in flavour `flavour` (0: the
// common copy; others: a different checksum or size, or a tombstone).
Entry Make(uint32_t key, int flavour, uint64_t seq) {
  const bool removed = flavour == 3;
  return Entry::Make(Content(key / 2), v1::SIDECAR_KIND_THUMB,
                     v1::SIDECAR_FORMAT_WEBP, static_cast<uint16_t>(key % 2),
                     flavour == 2 ? 999 : 100,
                     Sha256Of(flavour == 1 ? "other" : "copy"), seq, removed);
}

bool SameEntry(const Entry& a, const Entry& b) {
  return std::memcmp(&a, &b, sizeof(Entry)) == 0;
}

// The bytes of an entry's record: equal for copies of one sidecar.
std::string RecordBytes(const Entry& e) {
  Entry r = HolderTable::RecordOf(e);
  return std::string(reinterpret_cast<const char*>(&r), sizeof(Entry));
}

class HolderTableModel {
 public:
  void Set(HolderTable::Slot slot, Entries sorted) {
    model_[slot] = sorted;
    table_ = table_.WithOrigin(slot, sorted);
  }

  // Applies `changes` (sorted, one per key) to `slot` in both.
  void Change(HolderTable::Slot slot, const Entries& changes) {
    Entries& e = model_[slot];
    for (const Entry& c : changes) {
      auto it = std::lower_bound(
          e.begin(), e.end(), c,
          [](const Entry& a, const Entry& b) { return KeyLess(a, b); });
      if (it != e.end() && !KeyLess(c, *it)) {
        *it = c;
      } else {
        e.insert(it, c);
      }
    }
    table_ = table_.WithChanges(slot, changes);
  }

  // Every slot reads back as the model; lookups of every key agree; the
  // rows are the distinct records.
  void Check(uint32_t keys) const {
    std::set<std::string> records;
    for (const auto& [slot, entries] : model_) {
      SCOPED_TRACE(absl::StrCat("slot ", slot));
      ASSERT_EQ(table_.count(slot), entries.size());
      Entries back = table_.EntriesOf(slot);
      ASSERT_EQ(back.size(), entries.size());
      for (size_t i = 0; i < back.size(); ++i) {
        ASSERT_TRUE(SameEntry(back[i], entries[i])) << "entry " << i;
      }
      for (const Entry& e : entries) records.insert(RecordBytes(e));
      // From after a key (present or not), and stopping early.
      for (uint32_t k = 0; k < keys; k += 7) {
        EntryKey after = EntryKey::Of(Make(k, 0, 1));
        std::vector<Entry> want;
        for (const Entry& e : entries) {
          if (KeyLess(Make(k, 0, 1), e) && want.size() < 5) want.push_back(e);
        }
        std::vector<Entry> got;
        table_.ForEachAfter(slot, &after, [&](const Entry& e) {
          got.push_back(e);
          return got.size() < 5;
        });
        ASSERT_EQ(got.size(), want.size()) << "after key " << k;
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_TRUE(SameEntry(got[i], want[i])) << "after key " << k;
        }
      }
      for (uint32_t k = 0; k < keys; ++k) {
        EntryKey key = EntryKey::Of(Make(k, 0, 1));
        const Entry* want = nullptr;
        for (const Entry& e : entries) {
          if (KeyEqual(e, key)) want = &e;
        }
        std::optional<Entry> got = table_.Find(slot, key);
        ASSERT_EQ(got.has_value(), want != nullptr) << "key " << k;
        // The same through the rows found once for all slots.
        std::optional<EntryKey> one = key;
        uint32_t first = 0;
        table_.FirstRows(absl::MakeConstSpan(&one, 1), &first);
        std::optional<Entry> again = table_.FindFrom(slot, key, first);
        ASSERT_EQ(again.has_value(), got.has_value()) << "key " << k;
        if (got) {
          ASSERT_TRUE(SameEntry(*again, *got)) << "key " << k;
        }
        if (want) {
          ASSERT_TRUE(SameEntry(*got, *want)) << "key " << k;
        }
      }
    }
    EXPECT_EQ(table_.rows(), records.size());
  }

  const HolderTable& table() const { return table_; }

 private:
  std::map<HolderTable::Slot, Entries> model_;
  HolderTable table_;
};

// A random origin: each key with probability 3/4, mostly the common copy.
Entries RandomOrigin(std::mt19937_64& rng, uint32_t keys, uint64_t seq_base) {
  Entries out;
  for (uint32_t k = 0; k < keys; ++k) {
    if (rng() % 4 == 0) continue;
    int flavour = rng() % 5 == 0 ? static_cast<int>(1 + rng() % 3) : 0;
    out.push_back(Make(k, flavour, seq_base + rng() % 1000));
  }
  OriginTable::SortAndDedupe(&out);
  return out;
}

TEST(HolderTableTest, AnEmptyTableHoldsNothing) {
  HolderTable t;
  EXPECT_EQ(t.rows(), 0u);
  EXPECT_EQ(t.columns(), 0u);
  EXPECT_EQ(t.count(3), 0u);
  EXPECT_FALSE(t.Find(0, EntryKey::Of(Make(1, 0, 1))).has_value());
  EXPECT_TRUE(t.EntriesOf(7).empty());
}

TEST(HolderTableTest, CopiesShareOneRow) {
  Entries a = {Make(1, 0, 5), Make(2, 0, 6)};
  Entries b = {Make(1, 0, 70), Make(2, 1, 71)};  // key 2: another checksum
  OriginTable::SortAndDedupe(&a);
  OriginTable::SortAndDedupe(&b);
  HolderTable t = HolderTable().WithOrigin(0, a).WithOrigin(2, b);
  EXPECT_EQ(t.rows(), 3u);
  EXPECT_EQ(t.columns(), 3u);
  EXPECT_EQ(t.count(1), 0u);  // the slot in between is empty
  EXPECT_EQ(t.Find(2, EntryKey::Of(Make(1, 0, 1)))->seq(), 70u);
  EXPECT_EQ(t.Find(0, EntryKey::Of(Make(1, 0, 1)))->seq(), 5u);
  EXPECT_EQ(t.Find(2, EntryKey::Of(Make(2, 0, 1)))->sha256, Sha256Of("other"));
  EXPECT_EQ(t.Find(0, EntryKey::Of(Make(2, 0, 1)))->sha256, Sha256Of("copy"));
  // b drops key 2: its row goes, a's stays.
  t = t.WithOrigin(2, Entries{Make(1, 0, 72)});
  EXPECT_EQ(t.rows(), 2u);
  EXPECT_FALSE(t.Find(2, EntryKey::Of(Make(2, 0, 1))).has_value());
  EXPECT_TRUE(t.Find(0, EntryKey::Of(Make(2, 0, 1))).has_value());
}

TEST(HolderTableTest, SeqsSpanningMoreThan32BitsReadBack) {
  Entries e = {Make(1, 0, 1), Make(2, 0, kMaxSeq),
               Make(3, 0, uint64_t{1} << 33)};
  OriginTable::SortAndDedupe(&e);
  HolderTableModel m;
  m.Set(0, e);
  m.Set(1, Entries{Make(2, 0, 7)});
  m.Check(4);
}

class HolderTableRandomTest : public ::testing::TestWithParam<int> {};

TEST_P(HolderTableRandomTest, ReadsBackAsPerSlotArrays) {
  std::mt19937_64 rng(GetParam());
  const uint32_t keys = 64 + static_cast<uint32_t>(rng() % 400);
  HolderTableModel m;
  for (int step = 0; step < 48; ++step) {
    HolderTable::Slot slot = static_cast<HolderTable::Slot>(rng() % 6);
    if (rng() % 2 == 0) {
      // A few changes: copies, disagreements, tombstones, new keys.
      Entries changes;
      for (int n = static_cast<int>(rng() % 12); n > 0; --n) {
        int flavour = rng() % 3 == 0 ? static_cast<int>(rng() % 4) : 0;
        changes.push_back(Make(static_cast<uint32_t>(rng() % keys), flavour,
                               1 + rng() % 5000));
      }
      OriginTable::SortAndDedupe(&changes);
      m.Change(slot, changes);
    } else {
      Entries e = rng() % 8 == 0 ? Entries() : RandomOrigin(rng, keys, rng());
      m.Set(slot, std::move(e));
    }
    ASSERT_NO_FATAL_FAILURE(m.Check(keys)) << "after step " << step;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, HolderTableRandomTest, ::testing::Range(1, 9));

// Readers keep the table they took: a change makes a new one.
TEST(HolderTableTest, ATableIsUnchangedByTheTablesMadeFromIt) {
  Entries a = {Make(1, 0, 5)};
  HolderTable before = HolderTable().WithOrigin(0, a).WithOrigin(1, a);
  HolderTable after = before.WithOrigin(0, Entries{Make(4, 0, 6)});
  EXPECT_EQ(before.Find(0, EntryKey::Of(Make(1, 0, 1)))->seq(), 5u);
  EXPECT_FALSE(before.Find(0, EntryKey::Of(Make(4, 0, 1))).has_value());
  EXPECT_FALSE(after.Find(0, EntryKey::Of(Make(1, 0, 1))).has_value());
  EXPECT_EQ(after.Find(1, EntryKey::Of(Make(1, 0, 1)))->seq(), 5u);
  EXPECT_EQ(before.rows(), 1u);
  EXPECT_EQ(after.rows(), 2u);
}

}  // namespace
}  // namespace sidecar::availability
