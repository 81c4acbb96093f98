#include "services/availability/origin_table.h"

#include <gtest/gtest.h>

#include "services/availability/peer_cache.h"

namespace sidecar::availability {
namespace {

Uuid U(int n) {
  Uuid u;
  u.bytes[15] = static_cast<uint8_t>(n);
  u.bytes[0] = static_cast<uint8_t>(n >> 8);
  return u;
}

Entry E(int content, uint64_t seq, uint64_t size = 100, bool removed = false) {
  return Entry::Make(U(content), v1::SIDECAR_KIND_THUMB,
                     v1::SIDECAR_FORMAT_WEBP, 3, size, Sha256Of("x"), seq,
                     removed);
}

EntryKey K(int content) { return EntryKey::Of(E(content, 1)); }

TEST(EntryTest, PacksFieldsInto64Bytes) {
  Entry e = Entry::Make(U(7), v1::SIDECAR_KIND_PROXY, v1::SIDECAR_FORMAT_MP4,
                        513, kMaxEntrySize, Sha256Of("y"), kMaxSeq, true);
  EXPECT_EQ(e.kind(), v1::SIDECAR_KIND_PROXY);
  EXPECT_EQ(e.format(), v1::SIDECAR_FORMAT_MP4);
  EXPECT_EQ(e.variant(), 513);
  EXPECT_EQ(e.size(), kMaxEntrySize);
  EXPECT_EQ(e.seq(), kMaxSeq);
  EXPECT_TRUE(e.removed());
  EXPECT_EQ(e.sha256, Sha256Of("y"));
}

TEST(OriginTableTest, DeltaMergesNewestPerKey) {
  OriginTable t({U(1000)}, 5);
  std::vector<Entry> changed;
  t.ApplyDelta({E(3, 1), E(1, 2), E(2, 3)}, 3, &changed);
  EXPECT_EQ(t.live_count(), 3u);
  EXPECT_EQ(t.max_seq(), 3u);
  EXPECT_EQ(changed.size(), 3u);
  // Older change of key 1 is ignored; newer change of key 2 wins; key 3 is
  // withdrawn.
  changed.clear();
  t.ApplyDelta({E(1, 1, 999), E(2, 4, 200), E(3, 5, 0, true)}, 5, &changed);
  ASSERT_TRUE(t.Find(K(1)).has_value());
  EXPECT_EQ(t.Find(K(1))->size(), 100u);
  EXPECT_EQ(t.Find(K(2))->size(), 200u);
  EXPECT_TRUE(t.Find(K(3))->removed());
  EXPECT_EQ(t.live_count(), 2u);
  EXPECT_EQ(t.entry_count(), 3u);  // tombstone kept for relaying
  EXPECT_EQ(changed.size(), 2u);
  EXPECT_FALSE(t.Find(K(4)).has_value());
}

TEST(OriginTableTest, DuplicateKeysInOneBatchKeepHighestSeq) {
  OriginTable t({U(1000)}, 1);
  t.ApplyDelta({E(1, 1, 10), E(1, 3, 30), E(1, 2, 20)}, 3, nullptr);
  EXPECT_EQ(t.entry_count(), 1u);
  EXPECT_EQ(t.Find(K(1))->size(), 30u);
}

TEST(OriginTableTest, SinceReturnsAscendingSeq) {
  OriginTable t({U(1000)}, 1);
  t.ApplyDelta({E(5, 4), E(1, 2), E(9, 6), E(2, 1)}, 6, nullptr);
  std::vector<Entry> d = OriginTable::Since(t.entries(), 2);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].seq(), 4u);
  EXPECT_EQ(d[1].seq(), 6u);
  EXPECT_TRUE(OriginTable::Since(t.entries(), 6).empty());
}

TEST(PeerCacheTest, LookupFindsLiveHoldersOnly) {
  PeerCache cache({U(1)}, nullptr);
  cache.InitSelf(10, "", 1, 0, {E(100, 1)});
  ASSERT_TRUE(cache
                  .ReplaceRemote({U(2)}, InfoSource::kOrigin, 7, 2, 0,
                                 {E(100, 1), E(101, 2)})
                  .ok());
  ASSERT_TRUE(cache
                  .ApplyRemoteDelta({U(2)}, InfoSource::kOrigin, 7, 3,
                                    {E(101, 3, 0, true)})
                  .ok());
  // Deltas of a generation the cache does not hold are refused.
  EXPECT_FALSE(
      cache.ApplyRemoteDelta({U(2)}, InfoSource::kOrigin, 8, 4, {E(102, 4)})
          .ok());
  // A stale snapshot (older generation) is refused.
  EXPECT_FALSE(
      cache.ReplaceRemote({U(2)}, InfoSource::kOrigin, 6, 9, 0, {}).ok());
  // Entries about this device from elsewhere are ignored.
  ASSERT_TRUE(
      cache.ApplyRemoteDelta({U(1)}, InfoSource::kOrigin, 10, 9, {E(103, 9)})
          .ok());

  auto views = cache.Views();
  std::vector<std::optional<EntryKey>> keys = {K(100), K(101), K(103),
                                               std::nullopt};
  PeerCache::Found found;
  PeerCache::Lookup(views, keys, &found);
  auto holders = [&](size_t i) {
    int n = 0;
    for (size_t v = 0; v < views.size(); ++v) n += found.At(i, v) != nullptr;
    return n;
  };
  EXPECT_EQ(holders(0), 2);
  EXPECT_EQ(holders(1), 0);  // withdrawn
  EXPECT_EQ(holders(2), 0);  // relayed entry about ourselves was ignored
  EXPECT_EQ(holders(3), 0);

  auto digest = cache.Digest();
  ASSERT_EQ(digest.size(), 2u);
  for (const DigestEntry& d : digest) {
    if (d.origin == U(2)) {
      EXPECT_EQ(d.generation, 7u);
      EXPECT_EQ(d.max_seq, 3u);
    } else {
      EXPECT_EQ(d.origin, U(1));
      EXPECT_EQ(d.generation, 10u);
    }
  }
}

TEST(PeerCacheTest, SnapshotOutOfOrderIsSorted) {
  PeerCache cache({U(1)}, nullptr);
  ASSERT_TRUE(cache
                  .ReplaceRemote({U(2)}, InfoSource::kOrigin, 1, 3, 0,
                                 {E(9, 1), E(3, 2), E(5, 3)})
                  .ok());
  auto v = cache.View(U(2));
  ASSERT_TRUE(v.has_value());
  Entries back = v->entries.Array()->entries();
  EXPECT_TRUE(std::is_sorted(
      back.begin(), back.end(),
      [](const Entry& a, const Entry& b) { return KeyLess(a, b); }));
  EXPECT_EQ(back.size(), 3u);
  EXPECT_EQ(v->live_count, 3u);
}

TEST(PeerCacheTest, RemoteEntriesLeaveOutSelfAndTheOneExcepted) {
  PeerCache cache({U(1)}, nullptr);
  cache.InitSelf(10, "", 2, 0, {E(100, 1), E(101, 2)});
  ASSERT_TRUE(cache
                  .ReplaceRemote({U(2)}, InfoSource::kOrigin, 7, 3, 0,
                                 {E(100, 1), E(101, 2), E(102, 3, 0, true)})
                  .ok());
  ASSERT_TRUE(
      cache.ReplaceRemote({U(3)}, InfoSource::kOrigin, 5, 1, 0, {E(200, 1)})
          .ok());
  EXPECT_EQ(cache.TotalEntries(), 6u);
  EXPECT_EQ(cache.RemoteEntries(), 4u);  // tombstones count: they take room
  EXPECT_EQ(cache.RemoteEntries(U(2)), 1u);
  EXPECT_EQ(cache.RemoteEntries(U(3)), 3u);
  EXPECT_EQ(cache.RemoteEntries(U(9)), 4u);
}

TEST(EntrySetTest, FindsEveryKeyAndNoOther) {
  for (int n : {0, 1, 7, 100, 5000}) {
    std::vector<Entry> v;
    for (int i = 0; i < n; ++i) {
      Entry e = E(i, i + 1);
      e.content = Uuid::Random();  // spread over the buckets
      v.push_back(e);
    }
    OriginTable::SortAndDedupe(&v);
    EntrySet set(v);
    for (const Entry& e : v) {
      const Entry* f = set.Find(EntryKey::Of(e));
      ASSERT_NE(f, nullptr);
      EXPECT_EQ(f->seq(), e.seq());
    }
    for (int i = 0; i < 100; ++i) {
      Entry e = E(1, 1);
      e.content = Uuid::Random();
      EXPECT_EQ(set.Find(EntryKey::Of(e)), nullptr);
    }
    // FindMany agrees with Find, including absent and nullopt keys.
    std::vector<std::optional<EntryKey>> keys;
    for (const Entry& e : v) keys.push_back(EntryKey::Of(e));
    keys.push_back(std::nullopt);
    Entry absent = E(1, 1);
    absent.content = Uuid::Random();
    keys.push_back(EntryKey::Of(absent));
    std::vector<const Entry*> out(keys.size());
    set.FindMany(keys, out.data());
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(out[i], set.Find(*keys[i]));
    EXPECT_EQ(out[v.size()], nullptr);
    EXPECT_EQ(out[v.size() + 1], nullptr);
  }
}

}  // namespace
}  // namespace sidecar::availability
