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
  ASSERT_NE(t.Find(K(1)), nullptr);
  EXPECT_EQ(t.Find(K(1))->size(), 100u);
  EXPECT_EQ(t.Find(K(2))->size(), 200u);
  EXPECT_TRUE(t.Find(K(3))->removed());
  EXPECT_EQ(t.live_count(), 2u);
  EXPECT_EQ(t.entry_count(), 3u);  // tombstone kept for relaying
  EXPECT_EQ(changed.size(), 2u);
  EXPECT_EQ(t.Find(K(4)), nullptr);
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
  std::vector<Entry> d = OriginTable::Since(*t.entries(), 2);
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].seq(), 4u);
  EXPECT_EQ(d[1].seq(), 6u);
  EXPECT_TRUE(OriginTable::Since(*t.entries(), 6).empty());
}

TEST(PeerCacheTest, LookupFindsLiveHoldersOnly) {
  PeerCache cache({U(1)}, nullptr);
  cache.InitSelf(10, 1, {E(100, 1)});
  ASSERT_TRUE(
      cache.ReplaceRemote({U(2)}, 7, 2, 0, {E(100, 1), E(101, 2)}).ok());
  ASSERT_TRUE(cache.ApplyRemoteDelta({U(2)}, 7, 3, {E(101, 3, 0, true)}).ok());
  // Deltas of a generation the cache does not hold are refused.
  EXPECT_FALSE(cache.ApplyRemoteDelta({U(2)}, 8, 4, {E(102, 4)}).ok());
  // A stale snapshot (older generation) is refused.
  EXPECT_FALSE(cache.ReplaceRemote({U(2)}, 6, 9, 0, {}).ok());
  // Entries about this device from elsewhere are ignored.
  ASSERT_TRUE(cache.ApplyRemoteDelta({U(1)}, 10, 9, {E(103, 9)}).ok());

  auto views = cache.Views();
  std::vector<std::optional<EntryKey>> keys = {K(100), K(101), K(103),
                                               std::nullopt};
  std::vector<std::vector<PeerCache::Hit>> hits;
  PeerCache::Lookup(views, keys, &hits);
  EXPECT_EQ(hits[0].size(), 2u);
  EXPECT_TRUE(hits[1].empty());
  EXPECT_TRUE(hits[2].empty());
  EXPECT_TRUE(hits[3].empty());

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
  ASSERT_TRUE(
      cache.ReplaceRemote({U(2)}, 1, 3, 0, {E(9, 1), E(3, 2), E(5, 3)}).ok());
  auto v = cache.View(U(2));
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(std::is_sorted(
      v->entries->begin(), v->entries->end(),
      [](const Entry& a, const Entry& b) { return KeyLess(a, b); }));
  EXPECT_EQ(v->live_count, 3u);
}

}  // namespace
}  // namespace sidecar::availability
