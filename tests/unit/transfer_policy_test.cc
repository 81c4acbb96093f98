#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "services/transfer/policy.h"
#include "services/transfer/rate_limiter.h"

namespace sidecar::transfer {
namespace {

SidecarKey K(Kind kind) {
  SidecarKey k;
  k.content = Uuid::Random();
  k.kind = kind;
  k.variant = "v";
  k.format = v1::SIDECAR_FORMAT_WEBP;
  return k;
}

TEST(FetchPolicyTest, PreferFetchAlwaysFetches) {
  auto p = FetchPolicy::Make("prefer-fetch", /*metered=*/true, "thumb");
  ASSERT_TRUE(p.ok());
  EXPECT_FALSE(p->GenerateInstead(K(v1::SIDECAR_KIND_THUMB)).has_value());
  EXPECT_FALSE(p->GenerateInstead(K(v1::SIDECAR_KIND_PROXY)).has_value());
}

TEST(FetchPolicyTest, GenerateCheapGeneratesOnlyCheapKinds) {
  auto p = FetchPolicy::Make("generate-cheap", false, "thumb, ocr");
  ASSERT_TRUE(p.ok()) << p.status();
  auto why = p->GenerateInstead(K(v1::SIDECAR_KIND_THUMB));
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("generate-cheap"), std::string::npos);
  EXPECT_TRUE(p->GenerateInstead(K(v1::SIDECAR_KIND_OCR)).has_value());
  EXPECT_FALSE(p->GenerateInstead(K(v1::SIDECAR_KIND_PROXY)).has_value());
}

TEST(FetchPolicyTest, UnmeteredOnlyDependsOnTheLink) {
  auto metered = FetchPolicy::Make("unmetered-only", true, "");
  ASSERT_TRUE(metered.ok());
  auto why = metered->GenerateInstead(K(v1::SIDECAR_KIND_PROXY));
  ASSERT_TRUE(why.has_value());
  EXPECT_NE(why->find("metered"), std::string::npos);
  auto free_link = FetchPolicy::Make("unmetered-only", false, "");
  ASSERT_TRUE(free_link.ok());
  EXPECT_FALSE(free_link->GenerateInstead(K(v1::SIDECAR_KIND_PROXY)));
}

TEST(FetchPolicyTest, RejectsUnknownNames) {
  EXPECT_EQ(FetchPolicy::Make("always", false, "").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      FetchPolicy::Make("generate-cheap", false, "thumb,gif").status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(RateLimiterTest, UnlimitedNeverWaits) {
  RateLimiter r(0);
  absl::Time t = absl::Now();
  for (int i = 0; i < 1000; ++i) r.Acquire(1 << 20);
  EXPECT_LT(absl::Now() - t, absl::Milliseconds(100));
}

TEST(RateLimiterTest, HoldsTheRate) {
  RateLimiter r(4e6);  // 4 MB/s with a one-second burst
  EXPECT_EQ(r.WouldWait(1000), absl::ZeroDuration());
  absl::Time t = absl::Now();
  for (int i = 0; i < 12; ++i) r.Acquire(1'000'000);  // 12 MB
  absl::Duration took = absl::Now() - t;
  // 4 MB of burst, then 8 MB at 4 MB/s: about two seconds.
  EXPECT_GT(took, absl::Milliseconds(1800));
  EXPECT_LT(took, absl::Milliseconds(3500));
  EXPECT_GT(r.WouldWait(4'000'000), absl::Milliseconds(500));
}

}  // namespace
}  // namespace sidecar::transfer
