#include "services/availability/subscription.h"

#include "gtest/gtest.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

Entry Make(Kind kind, absl::string_view variant) {
  uint16_t id = *VariantDict::Global().Intern(variant);
  return Entry::Make(Uuid::Random(), kind, v1::SIDECAR_FORMAT_WEBP, id, 10,
                     Sha256Digest{}, 1, false);
}

TEST(SubscriptionTest, MatchesKindsAndVariants) {
  v1::Subscription p;
  p.add_kinds(v1::SIDECAR_KIND_THUMB);
  p.add_kinds(v1::SIDECAR_KIND_OCR);
  absl::StatusOr<Subscription> any = Subscription::FromProto(p);
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_TRUE(any->Matches(Make(v1::SIDECAR_KIND_THUMB, "grid")));
  EXPECT_TRUE(any->Matches(Make(v1::SIDECAR_KIND_OCR, "text")));
  EXPECT_FALSE(any->Matches(Make(v1::SIDECAR_KIND_PROXY, "720p")));

  VariantDict::Global().Intern("grid@2x").IgnoreError();
  p.add_variants("grid@2x");
  p.add_variants("never-seen-here");
  p.set_max_entries(7);
  absl::StatusOr<Subscription> some = Subscription::FromProto(p);
  ASSERT_TRUE(some.ok()) << some.status();
  EXPECT_EQ(some->max_entries(), 7u);
  EXPECT_TRUE(some->Matches(Make(v1::SIDECAR_KIND_THUMB, "grid@2x")));
  EXPECT_FALSE(some->Matches(Make(v1::SIDECAR_KIND_THUMB, "grid")));
  // A variant this device never saw stays out of its dictionary.
  EXPECT_FALSE(VariantDict::Global().Find("never-seen-here").has_value());
}

TEST(SubscriptionTest, OnlyUnknownVariantsMatchNothing) {
  v1::Subscription p;
  p.add_kinds(v1::SIDECAR_KIND_THUMB);
  p.add_variants("nowhere-else");
  absl::StatusOr<Subscription> s = Subscription::FromProto(p);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->Matches(Make(v1::SIDECAR_KIND_THUMB, "grid")));
}

TEST(SubscriptionTest, NoKindsIsEmpty) {
  absl::StatusOr<Subscription> s = Subscription::FromProto({});
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->empty());
  EXPECT_FALSE(s->Matches(Make(v1::SIDECAR_KIND_THUMB, "grid")));
}

TEST(SubscriptionTest, RefusesWhatAPeerMustNotSend) {
  v1::Subscription bad_kind;
  bad_kind.add_kinds(static_cast<v1::SidecarKind>(63));
  EXPECT_EQ(Subscription::FromProto(bad_kind).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::Subscription unspecified;
  unspecified.add_kinds(v1::SIDECAR_KIND_UNSPECIFIED);
  EXPECT_EQ(Subscription::FromProto(unspecified).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::Subscription bad_variant;
  bad_variant.add_kinds(v1::SIDECAR_KIND_THUMB);
  bad_variant.add_variants("../etc");
  EXPECT_EQ(Subscription::FromProto(bad_variant).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::Subscription many;
  for (size_t i = 0; i <= kMaxSubscribedVariants; ++i) {
    many.add_variants(absl::StrCat("v", i));
  }
  EXPECT_EQ(Subscription::FromProto(many).status().code(),
            absl::StatusCode::kResourceExhausted);
  v1::Subscription kinds;
  for (size_t i = 0; i <= kMaxSubscribedKinds; ++i) {
    kinds.add_kinds(v1::SIDECAR_KIND_THUMB);
  }
  EXPECT_EQ(Subscription::FromProto(kinds).status().code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(SubscriptionSpecTest, ParsesFlagsAndNamesTheBadItem) {
  absl::StatusOr<SubscriptionSpec> s =
      ParseSubscriptionSpec("thumb, ocr,thumb", "grid@2x");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->kinds,
            (std::vector<Kind>{v1::SIDECAR_KIND_THUMB, v1::SIDECAR_KIND_OCR}));
  EXPECT_EQ(s->variants, std::vector<std::string>{"grid@2x"});
  v1::Subscription p = SubscriptionToProto(*s, 99);
  EXPECT_EQ(p.kinds_size(), 2);
  EXPECT_EQ(p.max_entries(), 99u);

  absl::StatusOr<SubscriptionSpec> bad = ParseSubscriptionSpec("thumbz", "");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("thumbz"), std::string::npos);
  EXPECT_FALSE(ParseSubscriptionSpec("thumb", "a/b").ok());
  EXPECT_TRUE(ParseSubscriptionSpec("", "")->kinds.empty());
}

}  // namespace
}  // namespace sidecar::availability
