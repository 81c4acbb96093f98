#include "services/availability/ranking.h"

#include <gtest/gtest.h>

namespace sidecar::availability {
namespace {

Uuid U(int n) {
  Uuid u;
  u.bytes[15] = static_cast<uint8_t>(n);
  return u;
}

Candidate C(int id, bool online, int rtt_ms, double tput, uint64_t size) {
  Candidate c;
  c.device = U(id);
  c.online = online;
  c.rtt = absl::Milliseconds(rtt_ms);
  c.throughput = tput;
  c.size = size;
  return c;
}

TEST(RankingTest, OfflineHoldersAreNeverOffered) {
  std::vector<Candidate> c = {C(1, false, 1, 0, 10), C(2, true, 9, 0, 10)};
  EXPECT_EQ(RankSources(c), std::vector<size_t>({1}));
  c[1].online = false;
  EXPECT_TRUE(RankSources(c).empty());
}

TEST(RankingTest, LowerRoundTripWinsWithoutThroughput) {
  std::vector<Candidate> c = {C(1, true, 45, 0, 45000), C(2, true, 1, 0, 45000),
                              C(3, true, 50, 0, 45000)};
  EXPECT_EQ(RankSources(c), std::vector<size_t>({1, 0, 2}));
}

TEST(RankingTest, MeasuredThroughputDecidesLargeFiles) {
  // The seed's scenario 2: MacBook 45 MB/s 2 ms, home server 110 MB/s 1 ms,
  // cloud 10 MB/s 50 ms.
  std::vector<Candidate> c = {C(1, true, 2, 45e6, 200e6),
                              C(2, true, 1, 110e6, 200e6),
                              C(3, true, 50, 10e6, 200e6)};
  EXPECT_EQ(RankSources(c), std::vector<size_t>({1, 0, 2}));
  // A high-latency but much faster link wins for a big file...
  std::vector<Candidate> d = {C(1, true, 1, 5e6, 500e6),
                              C(2, true, 40, 100e6, 500e6)};
  EXPECT_EQ(RankSources(d)[0], 1u);
  // ...but not for a tiny one.
  d[0].size = d[1].size = 1000;
  EXPECT_EQ(RankSources(d)[0], 0u);
}

TEST(RankingTest, DemotedGoesLastAndTiesAreDeterministic) {
  std::vector<Candidate> c = {C(1, true, 1, 100e6, 10), C(2, true, 5, 1e6, 10),
                              C(3, true, 5, 1e6, 10)};
  c[0].demoted = true;
  EXPECT_EQ(RankSources(c), std::vector<size_t>({1, 2, 0}));
}

Sha256Digest Bytes(int n) {
  Sha256Digest d{};
  d[0] = static_cast<uint8_t>(n);
  return d;
}

TEST(RankingTest, HoldersOfTheNewestVersionComeFirst) {
  // The fastest holder has the older version: it comes after both holders
  // of the newer one.
  std::vector<Candidate> c = {C(1, true, 1, 100e6, 10), C(2, true, 30, 1e6, 10),
                              C(3, true, 20, 1e6, 10)};
  c[0].generator_version = "thumbgen 1.2";
  c[0].sha256 = Bytes(1);
  c[1].generator_version = c[2].generator_version = "thumbgen 1.10";
  c[1].sha256 = c[2].sha256 = Bytes(2);
  EXPECT_EQ(RankSources(c), std::vector<size_t>({2, 1, 0}));
  // A newer version held only offline does not demote what can be fetched.
  c[1].online = c[2].online = false;
  EXPECT_EQ(RankSources(c), std::vector<size_t>({0}));
  // Versions of another generator, or unparsable, are not older: speed
  // decides among them.
  c[1].online = c[2].online = true;
  c[1].generator_version = "othergen 9";
  c[2].generator_version = "nightly";
  EXPECT_EQ(RankSources(c), std::vector<size_t>({0, 2, 1}));
}

TEST(RankingTest, HoldersOfTheSameBytesStayTogether) {
  // Same version, two different digests: the group of the best holder
  // first, whole, then the other; a fetch of the first source's bytes
  // finds all its agreeing sources at the front.
  std::vector<Candidate> c = {C(1, true, 1, 0, 10), C(2, true, 2, 0, 10),
                              C(3, true, 3, 0, 10), C(4, true, 4, 0, 10)};
  for (Candidate& x : c) x.generator_version = "ocr 3";
  c[0].sha256 = c[2].sha256 = Bytes(1);
  c[1].sha256 = c[3].sha256 = Bytes(2);
  EXPECT_EQ(RankSources(c), std::vector<size_t>({0, 2, 1, 3}));
}

TEST(RankingTest, ConflictingVersionsAreSameVersionDifferentBytes) {
  std::vector<HeldCopy> copies = {
      {"ocr 3", Bytes(1), 10},      {"ocr 3", Bytes(1), 10},
      {"ocr 4", Bytes(2), 10},      {"ocr 4", Bytes(3), 10},
      {"thumbgen 1", Bytes(4), 10}, {"thumbgen 1", Bytes(4), 11},
      {"", Bytes(5), 10},           {"", Bytes(6), 10}};
  EXPECT_EQ(ConflictingVersions(copies),
            std::vector<std::string>({"ocr 4", "thumbgen 1"}));
  copies.resize(2);
  EXPECT_TRUE(ConflictingVersions(copies).empty());
}

}  // namespace
}  // namespace sidecar::availability
