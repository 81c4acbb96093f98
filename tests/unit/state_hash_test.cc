// The state digest an origin signs in its heads: what it covers, and that
// the incremental form (per-bucket, forked and adopted) always equals the
// digest computed from scratch.
#include "services/availability/state_hash.h"

#include <gtest/gtest.h>

#include <random>

#include "services/availability/generator_version.h"
#include "services/availability/origin_table.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

Uuid RandomUuid(std::mt19937_64& rng) {
  Uuid u;
  for (auto& b : u.bytes) b = static_cast<uint8_t>(rng());
  return u;
}

Entry Make(const Uuid& content, uint16_t variant, uint64_t size, uint64_t seq,
           bool removed = false) {
  return Entry::Make(content, v1::SIDECAR_KIND_THUMB, v1::SIDECAR_FORMAT_WEBP,
                     variant, size, Sha256Of(std::to_string(size)), seq,
                     removed);
}

Entries Sorted(Entries e) {
  OriginTable::SortAndDedupe(&e);
  return e;
}

TEST(StateHashTest, CoversWhatIsAdvertisedAndNothingElse) {
  std::mt19937_64 rng(1);
  Uuid a = RandomUuid(rng), b = RandomUuid(rng);
  const Sha256Digest base =
      StateHashOf(Sorted({Make(a, 3, 10, 1), Make(b, 3, 20, 2)}));
  // Seqs and tombstones are not part of what is advertised.
  EXPECT_EQ(StateHashOf(Sorted({Make(a, 3, 10, 7), Make(b, 3, 20, 9),
                                Make(RandomUuid(rng), 3, 5, 8, true)})),
            base);
  // Every advertised field is.
  EXPECT_NE(StateHashOf(Sorted({Make(a, 3, 10, 1)})), base);
  EXPECT_NE(StateHashOf(Sorted({Make(a, 3, 11, 1), Make(b, 3, 20, 2)})), base);
  EXPECT_NE(StateHashOf(Sorted({Make(a, 4, 10, 1), Make(b, 3, 20, 2)})), base);
  EXPECT_NE(StateHashOf(Sorted({Make(a, 3, 10, 1), Make(b, 3, 20, 2, true)})),
            base);
  Entry other_sha = Make(a, 3, 10, 1);
  other_sha.sha256[0] ^= 1;
  EXPECT_NE(StateHashOf(Sorted({other_sha, Make(b, 3, 20, 2)})), base);
  EXPECT_NE(StateHashOf({}), base);
}

// The generator version is advertised, so it is covered: by its string,
// which is the same on every device, not by its id, which is not.
TEST(StateHashTest, CoversTheGeneratorVersion) {
  std::mt19937_64 rng(4);
  Uuid a = RandomUuid(rng), b = RandomUuid(rng);
  GeneratorVersionDict& dict = GeneratorVersionDict::Global();
  const uint16_t v12 = dict.Intern("thumbgen 1.2").value();
  const uint16_t v13 = dict.Intern("thumbgen 1.3").value();
  auto with = [](Entry e, uint16_t version) {
    return Entry::Make(e.content, e.kind(), e.format(), e.variant(), e.size(),
                       e.sha256, e.seq(), e.removed(), version);
  };
  const Sha256Digest base =
      StateHashOf(Sorted({with(Make(a, 3, 10, 1), v12), Make(b, 3, 20, 2)}));
  EXPECT_NE(
      StateHashOf(Sorted({with(Make(a, 3, 10, 1), v13), Make(b, 3, 20, 2)})),
      base);
  EXPECT_NE(StateHashOf(Sorted({Make(a, 3, 10, 1), Make(b, 3, 20, 2)})), base);
  // The empty version and none at all are the same thing.
  EXPECT_EQ(
      StateHashOf(Sorted({with(Make(a, 3, 10, 1), 0), Make(b, 3, 20, 2)})),
      StateHashOf(Sorted({Make(a, 3, 10, 1), Make(b, 3, 20, 2)})));
  // The canonical leaf: ..., size, sha256, then the version's length byte
  // and bytes (as tests/fuzz/make_corpus.py computes it independently).
  Entries one = {with(Make(a, 3, 10, 1), v12)};
  std::string leaf(std::string(a.AsBytes()));
  leaf.push_back(static_cast<char>(v1::SIDECAR_KIND_THUMB));
  leaf.push_back(static_cast<char>(v1::SIDECAR_FORMAT_WEBP));
  absl::string_view name = VariantDict::Global().Name(3);
  leaf.push_back(static_cast<char>(name.size()));
  leaf.append(name.data(), name.size());
  AppendBigEndian(10, &leaf);
  leaf.append(std::string(DigestBytes(Sha256Of("10"))));
  leaf.push_back(static_cast<char>(12));
  leaf.append("thumbgen 1.2");
  const uint32_t bucket = (uint32_t{a.bytes[0]} << 8 | a.bytes[1]) >> 4;
  Sha256 root;
  root.Update("sidecar-sync state v2");
  for (uint32_t i = 0; i < 4096; ++i) {
    root.Update(DigestBytes(Sha256Of(i == bucket ? leaf : "")));
  }
  EXPECT_EQ(StateHashOf(one), root.Finish());
}

// Variant ids differ between processes; the digest must follow the names.
// Two variants of one content whose id order is the reverse of their name
// order hash as in name order.
TEST(StateHashTest, VariantsOfOneContentAreHashedInNameOrder) {
  auto z = VariantDict::Global().Intern("zz-state-hash-test");
  auto y = VariantDict::Global().Intern("yy-state-hash-test");
  ASSERT_TRUE(z.ok() && y.ok());
  ASSERT_LT(*z, *y);  // ids in the reverse of name order
  std::mt19937_64 rng(2);
  Uuid c = RandomUuid(rng);
  Entries both = Sorted({Make(c, *z, 1, 1), Make(c, *y, 2, 2)});
  ASSERT_EQ(both[0].variant(), *z);  // cache order: by id
  // What a process with the other id order would hash: the same entries,
  // with the group in name order, which is this array reversed. The digest
  // of a group is order-sensitive, so equality shows the hasher sorted.
  Entries swapped = {both[1], both[0]};
  EXPECT_EQ(StateHashOf(swapped), StateHashOf(both));
}

// Random tables and random changes: the table's incremental digest, also
// when computed on a fork while the table keeps changing, always equals the
// digest from scratch.
TEST(StateHashTest, IncrementalDigestEqualsTheDigestFromScratch) {
  std::mt19937_64 rng(3);
  std::vector<Uuid> contents;
  for (int i = 0; i < 5000; ++i) contents.push_back(RandomUuid(rng));
  OriginTable table({RandomUuid(rng)}, 1);
  uint64_t seq = 0;
  auto random_batch = [&](int n) {
    Entries batch;
    for (int i = 0; i < n; ++i) {
      const Uuid& c = contents[rng() % contents.size()];
      batch.push_back(
          Make(c, 3 + rng() % 2, rng() % 1000, ++seq, rng() % 4 == 0));
    }
    return batch;
  };
  table.ApplyDelta(random_batch(3000), seq, nullptr);
  for (int round = 0; round < 40; ++round) {
    if (round % 3 == 0) {
      // Computed on a fork, while more changes land on the table.
      StateHasher fork = table.ForkHasher();
      std::shared_ptr<const EntrySet> at_fork = table.entries().Array();
      table.ApplyDelta(random_batch(1 + rng() % 50), seq, nullptr);
      EXPECT_EQ(fork.Compute(at_fork->entries()),
                StateHashOf(at_fork->entries()));
      table.AdoptHasher(fork);
    } else {
      table.ApplyDelta(random_batch(1 + rng() % 50), seq, nullptr);
    }
    if (round == 20) {  // a snapshot replaces everything
      table.Replace(1, seq, 0, Sorted(random_batch(2000)));
    }
    ASSERT_EQ(table.ComputeStateHash(),
              StateHashOf(table.entries().Array()->entries()))
        << "round " << round;
  }
}

TEST(StateHashTest, AdoptingAForkFromBeforeAReplaceKeepsNothingStale) {
  std::mt19937_64 rng(4);
  OriginTable table({RandomUuid(rng)}, 1);
  table.ApplyDelta({Make(RandomUuid(rng), 3, 1, 1)}, 1, nullptr);
  StateHasher fork = table.ForkHasher();
  fork.Compute(table.entries().Array()->entries());
  table.Replace(1, 2, 0, {Make(RandomUuid(rng), 3, 2, 2)});
  table.AdoptHasher(fork);  // from before the Replace: ignored
  EXPECT_EQ(table.ComputeStateHash(),
            StateHashOf(table.entries().Array()->entries()));
}

}  // namespace
}  // namespace sidecar::availability
