// Generator versions: their order, their validation and the bounds of the
// dictionaries (StringDict) that hold them.
#include "services/availability/generator_version.h"

#include <gtest/gtest.h>

#include <compare>
#include <string>

#include "absl/strings/str_cat.h"
#include "services/availability/entry.h"
#include "services/availability/string_dict.h"

namespace sidecar::availability {
namespace {

using std::partial_ordering;

TEST(GeneratorVersionOrderTest, SameNameComparesComponentsNumerically) {
  EXPECT_EQ(CompareGeneratorVersions("thumbgen 1.10", "thumbgen 1.9"),
            partial_ordering::greater);
  EXPECT_EQ(CompareGeneratorVersions("thumbgen 1.2", "thumbgen 1.3"),
            partial_ordering::less);
  EXPECT_EQ(CompareGeneratorVersions("thumbgen 2", "thumbgen 1.99.99"),
            partial_ordering::greater);
  EXPECT_EQ(CompareGeneratorVersions("thumbgen 1.2", "thumbgen 1.2.0"),
            partial_ordering::equivalent);
  EXPECT_EQ(CompareGeneratorVersions("thumbgen 1.2.1", "thumbgen 1.2"),
            partial_ordering::greater);
  // Separators and a 'v' before the number are not part of the name.
  EXPECT_EQ(CompareGeneratorVersions("thumbgen-v1.3", "thumbgen 1.2"),
            partial_ordering::greater);
  EXPECT_EQ(CompareGeneratorVersions("thumbgen/1.3", "thumbgen_1.3"),
            partial_ordering::equivalent);
  EXPECT_EQ(CompareGeneratorVersions("1.3", "v1.2"), partial_ordering::greater);
  // A 'v' inside a word is part of the name.
  EXPECT_EQ(CompareGeneratorVersions("dev2", "de1"),
            partial_ordering::unordered);
  EXPECT_TRUE(IsNewerGeneratorVersion("ocr 10", "ocr 9"));
  EXPECT_FALSE(IsNewerGeneratorVersion("ocr 9", "ocr 10"));
}

TEST(GeneratorVersionOrderTest, OtherNamesAndUnparsableAreNeverNewer) {
  for (auto [a, b] : std::vector<std::pair<std::string, std::string>>{
           {"thumbgen 2.0", "ocr 1.0"},
           {"thumbgen 2.0", ""},
           {"nightly", "thumbgen 1.0"},
           {"thumbgen 1.2-beta", "thumbgen 1.1"},
           {"thumbgen 1.", "thumbgen 1.1"},
           {"thumbgen 1234567890123456789", "thumbgen 1"},  // 19 digits
       }) {
    EXPECT_EQ(CompareGeneratorVersions(a, b), partial_ordering::unordered)
        << a << " vs " << b;
    EXPECT_FALSE(IsNewerGeneratorVersion(a, b)) << a << " vs " << b;
    EXPECT_FALSE(IsNewerGeneratorVersion(b, a)) << b << " vs " << a;
  }
  // Equal strings are equivalent, parsable or not.
  EXPECT_EQ(CompareGeneratorVersions("nightly", "nightly"),
            partial_ordering::equivalent);
  EXPECT_EQ(CompareGeneratorVersions("", ""), partial_ordering::equivalent);
}

TEST(GeneratorVersionValidateTest, BoundsLengthAndBytes) {
  EXPECT_TRUE(ValidateGeneratorVersion("").ok());
  EXPECT_TRUE(ValidateGeneratorVersion("thumbgen 1.2").ok());
  EXPECT_TRUE(ValidateGeneratorVersion("Bildgenerator \xc3\xa9 2").ok());
  EXPECT_TRUE(ValidateGeneratorVersion(std::string(128, 'x')).ok());
  EXPECT_EQ(ValidateGeneratorVersion(std::string(129, 'x')).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateGeneratorVersion("a\nb").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateGeneratorVersion(std::string("a\0b", 3)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateGeneratorVersion("\xc3\x28").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateGeneratorVersion("\xed\xa0\x80").code(),  // surrogate
            absl::StatusCode::kInvalidArgument);
}

Uuid Peer(uint8_t n) {
  Uuid u;
  u.bytes.fill(0);
  u.bytes[0] = n;
  return u;
}

TEST(StringDictTest, PeersAreBoundedSeparatelyAndTogether) {
  constexpr absl::string_view kKnown[] = {""};
  StringDict dict(StringDict::Limits{16, 4, 5, "things", "few"}, kKnown);
  EXPECT_EQ(dict.size(), 1u);
  EXPECT_EQ(dict.Name(0), "");
  // One peer: its share and no more; known names cost nothing.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(dict.InternFromPeer(absl::StrCat("a", i), Peer(1)).ok());
  }
  absl::StatusOr<uint16_t> refused = dict.InternFromPeer("a5", Peer(1));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("things"), std::string::npos);
  EXPECT_TRUE(dict.InternFromPeer("a0", Peer(1)).ok());
  EXPECT_FALSE(dict.Find("a5").has_value());
  EXPECT_EQ(dict.added_by(Peer(1)), 5u);
  // Others fill the peers' part (16 - 4 = 12) and stop there.
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(dict.InternFromPeer(absl::StrCat("b", i), Peer(2)).ok());
  }
  EXPECT_TRUE(dict.InternFromPeer("c0", Peer(3)).ok());
  EXPECT_EQ(dict.size(), 12u);
  EXPECT_EQ(dict.InternFromPeer("c1", Peer(3)).status().code(),
            absl::StatusCode::kResourceExhausted);
  // The device's own names take the reserve, then the dictionary is full.
  for (int i = 0; i < 4; ++i) {
    absl::StatusOr<uint16_t> id = dict.Intern(absl::StrCat("own", i));
    ASSERT_TRUE(id.ok());
    EXPECT_EQ(dict.Name(*id), absl::StrCat("own", i));
  }
  EXPECT_EQ(dict.Intern("own4").status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(dict.size(), 16u);
}

TEST(GeneratorVersionDictTest, FitsTheEntryAndStartsWithTheEmptyVersion) {
  GeneratorVersionDict& dict = GeneratorVersionDict::Global();
  EXPECT_EQ(dict.Find(""), std::optional<uint16_t>(0));
  EXPECT_EQ(dict.limits().capacity, size_t{kMaxVersionId} + 1);
  EXPECT_LT(dict.limits().per_peer_share,
            dict.limits().capacity - dict.limits().local_reserve);
}

}  // namespace
}  // namespace sidecar::availability
