#include "common/crc32c.h"

#include <algorithm>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "tests/support/test_data.h"

namespace sidecar {
namespace {

using ::sidecar::testing::RandomBytes;

// Check values from RFC 3720 (iSCSI), appendix B.4, and the usual "123456789".
TEST(Crc32cTest, KnownValues) {
  EXPECT_EQ(Crc32c(""), 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xe3069283u);
  EXPECT_EQ(Crc32c(std::string(32, '\0')), 0x8a9136aau);
  EXPECT_EQ(Crc32c(std::string(32, '\xff')), 0x62a8ab43u);
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  EXPECT_EQ(Crc32c(ascending), 0x46dd794eu);
  for (const char* s : {"", "123456789"}) {
    EXPECT_EQ(internal::Crc32cExtendPortable(0, s), Crc32c(s));
  }
}

TEST(Crc32cTest, FastAndPortableAgreeAtEveryLengthAndAlignment) {
  const std::string data = RandomBytes(4096 + 64, 1);
  for (size_t off = 0; off < 9; ++off) {
    for (size_t len : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 1000, 4096}) {
      absl::string_view v(data.data() + off, len);
      EXPECT_EQ(Crc32c(v), internal::Crc32cExtendPortable(0, v))
          << off << " " << len;
    }
  }
}

// Crc32cExtend is ISA-L's crc32_iscsi (with the inversions CRC-32C adds);
// the portable table version is the independent reference.
TEST(Crc32cTest, IsalAgreesWithPortableOnOddLengthsAndSplits) {
  std::mt19937_64 rng(4);
  const std::string data = RandomBytes((1 << 20) + 64, 5);
  for (int round = 0; round < 200; ++round) {
    // Odd lengths from 1 byte to past 1 MiB, at offsets 0..63.
    const size_t len =
        (round < 100 ? rng() % 512 : rng() % ((1 << 20) + 1)) | 1;
    const size_t off = rng() % 64;
    absl::string_view whole(data.data() + off, len);
    const uint32_t want = internal::Crc32cExtendPortable(0, whole);
    ASSERT_EQ(Crc32c(whole), want) << off << " " << len;
    const size_t cut = rng() % (len + 1);
    absl::string_view a = whole.substr(0, cut);
    absl::string_view b = whole.substr(cut);
    EXPECT_EQ(Crc32cExtend(Crc32c(a), b), want)
        << off << " " << len << " " << cut;
    EXPECT_EQ(
        internal::Crc32cExtendPortable(internal::Crc32cExtendPortable(0, a), b),
        want)
        << off << " " << len << " " << cut;
    // Mixed: ISA-L continues what the portable version began, and back.
    EXPECT_EQ(Crc32cExtend(internal::Crc32cExtendPortable(0, a), b), want);
    EXPECT_EQ(internal::Crc32cExtendPortable(Crc32c(a), b), want);
  }
}

TEST(Crc32cTest, ManySmallExtendsEqualWhole) {
  const std::string data = RandomBytes(100003, 6);
  std::mt19937_64 rng(7);
  uint32_t crc = 0;
  for (size_t pos = 0; pos < data.size();) {
    const size_t n = std::min<size_t>(rng() % 300, data.size() - pos);
    crc = Crc32cExtend(crc, absl::string_view(data.data() + pos, n));
    pos += n;
  }
  EXPECT_EQ(crc, internal::Crc32cExtendPortable(0, data));
}

TEST(Crc32cTest, ExtendEqualsWhole) {
  const std::string data = RandomBytes(100000, 2);
  for (size_t cut : {0, 1, 13, 50000, 99999, 100000}) {
    absl::string_view a(data.data(), cut);
    absl::string_view b(data.data() + cut, data.size() - cut);
    EXPECT_EQ(Crc32cExtend(Crc32c(a), b), Crc32c(data)) << cut;
  }
}

TEST(Crc32cTest, CatchesAnyOneBitFlip) {
  std::string data = RandomBytes(2048, 3);
  const uint32_t good = Crc32c(data);
  for (size_t i = 0; i < data.size(); i += 97) {
    for (int bit = 0; bit < 8; ++bit) {
      data[i] ^= static_cast<char>(1 << bit);
      EXPECT_NE(Crc32c(data), good) << i << ":" << bit;
      data[i] ^= static_cast<char>(1 << bit);
    }
  }
}

}  // namespace
}  // namespace sidecar
