#include "common/bytes_format.h"

#include <cstdint>
#include <string>

#include "gtest/gtest.h"

namespace sidecar {
namespace {

TEST(HumanBytesTest, BelowOneKibIsExact) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(812), "812 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
}

TEST(HumanBytesTest, OneDecimalInTheLargestUnit) {
  EXPECT_EQ(HumanBytes(1024), "1.0 KiB");
  EXPECT_EQ(HumanBytes(46182), "45.1 KiB");
  EXPECT_EQ(HumanBytes(64ull << 20), "64.0 MiB");
  EXPECT_EQ(HumanBytes(3ull << 30 >> 1), "1.5 GiB");
  EXPECT_EQ(HumanBytes(5ull << 40), "5.0 TiB");
  EXPECT_EQ(HumanBytes(2ull << 50), "2.0 PiB");
}

TEST(HumanBytesTest, RoundsWithinTheUnitBelow) {
  // Just under 1 MiB stays in KiB and rounds up there.
  EXPECT_EQ(HumanBytes((1ull << 20) - 1), "1024.0 KiB");
}

TEST(HumanBytesTest, PibIsTheLargestUnit) {
  EXPECT_EQ(HumanBytes(2048ull << 50), "2048.0 PiB");
  EXPECT_EQ(HumanBytes(UINT64_MAX), "16384.0 PiB");
}

TEST(ParseByteSizeTest, UnitsAndErrors) {
  EXPECT_EQ(*ParseByteSize("0"), 0u);
  EXPECT_EQ(*ParseByteSize("1048576"), 1048576u);
  EXPECT_EQ(*ParseByteSize("64k"), 64u << 10);
  EXPECT_EQ(*ParseByteSize("512M"), 512u << 20);
  EXPECT_EQ(*ParseByteSize("2G"), 2ull << 30);
  EXPECT_EQ(*ParseByteSize("2GiB"), 2ull << 30);
  EXPECT_EQ(*ParseByteSize("1.5G"), 3ull << 29);
  EXPECT_EQ(*ParseByteSize("1T"), 1ull << 40);
  for (const char* bad : {"", "G", "-1", "2X", "1.5", "99999999999999999999"}) {
    absl::StatusOr<uint64_t> v = ParseByteSize(bad);
    EXPECT_FALSE(v.ok()) << bad;
    if (!v.ok()) {
      EXPECT_NE(v.status().message().find("e.g. 512M"), std::string::npos);
    }
  }
}

}  // namespace
}  // namespace sidecar
