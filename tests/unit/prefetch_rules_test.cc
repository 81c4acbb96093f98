// PrefetchRules (parsing, matching) and PrefetchGate (the prefetch limit and
// the metered pause).
#include "services/transfer/prefetch_rules.h"

#include <atomic>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "services/transfer/prefetch_gate.h"

namespace sidecar::transfer {
namespace {

SidecarKey K(Kind kind, std::string variant) {
  SidecarKey k;
  k.content.bytes[15] = 1;
  k.kind = kind;
  k.variant = std::move(variant);
  k.format = v1::SIDECAR_FORMAT_WEBP;
  return k;
}

TEST(PrefetchRulesTest, VariantRuleOverridesItsKind) {
  absl::StatusOr<PrefetchRules> r =
      PrefetchRules::Parse("thumb/grid@2x=eager, thumb=lazy,proxy=never");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ModeOf(K(v1::SIDECAR_KIND_THUMB, "grid@2x")),
            PrefetchMode::kEager);
  EXPECT_EQ(r->ModeOf(K(v1::SIDECAR_KIND_THUMB, "grid@1x")),
            PrefetchMode::kLazy);
  EXPECT_EQ(r->ModeOf(K(v1::SIDECAR_KIND_PROXY, "720p")), PrefetchMode::kNever);
  // No rule: lazy.
  EXPECT_EQ(r->ModeOf(K(v1::SIDECAR_KIND_OCR, "text")), PrefetchMode::kLazy);
  EXPECT_EQ(r->RuleFor(K(v1::SIDECAR_KIND_THUMB, "grid@2x")),
            "thumb/grid@2x=eager");
  EXPECT_EQ(r->RuleFor(K(v1::SIDECAR_KIND_THUMB, "x")), "thumb=lazy");
  EXPECT_EQ(r->RuleFor(K(v1::SIDECAR_KIND_OCR, "text")), "");
}

TEST(PrefetchRulesTest, VariantNeverUnderAnEagerKind) {
  absl::StatusOr<PrefetchRules> r =
      PrefetchRules::Parse("thumb=eager,thumb/huge=never");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ModeOf(K(v1::SIDECAR_KIND_THUMB, "small")),
            PrefetchMode::kEager);
  EXPECT_EQ(r->ModeOf(K(v1::SIDECAR_KIND_THUMB, "huge")), PrefetchMode::kNever);
}

TEST(PrefetchRulesTest, EagerKindListHasKindsWithAnyEagerRule) {
  absl::StatusOr<PrefetchRules> r = PrefetchRules::Parse(
      "thumb/grid@2x=eager,thumb=lazy,proxy=never,"
      "ocr=eager,ocr/x=never");
  ASSERT_TRUE(r.ok()) << r.status();
  std::vector<Kind> kinds = r->EagerKindList();
  ASSERT_EQ(kinds.size(), 2u);
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), v1::SIDECAR_KIND_THUMB),
            kinds.end());
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), v1::SIDECAR_KIND_OCR),
            kinds.end());
  EXPECT_TRUE(PrefetchRules::Parse("thumb=lazy")->EagerKindList().empty());
}

TEST(PrefetchRulesTest, TextFormRoundTrips) {
  absl::StatusOr<PrefetchRules> r =
      PrefetchRules::Parse(" proxy=never , thumb/grid@2x=eager,thumb=lazy ");
  ASSERT_TRUE(r.ok()) << r.status();
  absl::StatusOr<PrefetchRules> again = PrefetchRules::Parse(r->ToString());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, *r);
  EXPECT_EQ(r->rules().size(), 3u);
  // The order given does not matter.
  EXPECT_EQ(PrefetchRules::Parse("thumb=lazy,proxy=never,thumb/grid@2x=eager")
                ->ToString(),
            r->ToString());
  EXPECT_EQ(PrefetchRules::Parse("")->ToString(), "");
}

TEST(PrefetchRulesTest, EagerKindsIsTheOldFlag) {
  PrefetchRules r = PrefetchRules::EagerKinds(
      {v1::SIDECAR_KIND_THUMB, v1::SIDECAR_KIND_THUMB});
  EXPECT_EQ(r.ToString(), "thumb=eager");
  EXPECT_EQ(r.ModeOf(K(v1::SIDECAR_KIND_THUMB, "any")), PrefetchMode::kEager);
}

TEST(PrefetchRulesTest, BadRulesNameTheRule) {
  struct Case {
    const char* text;
    const char* in_message;
  } cases[] = {
      {"thumbs=eager,gif=eager", "\"gif=eager\""},
      {"thumb=sometimes", "unknown mode \"sometimes\""},
      {"thumb", "no mode"},
      {"thumb/../x=eager", "\"thumb/../x=eager\": variant"},
      {"thumb/=eager", "variant"},
      {"thumb=eager,thumb=lazy", "already given"},
      {"thumb/a=eager,thumb/a=never", "thumb/a was already given"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<PrefetchRules> r = PrefetchRules::Parse(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_NE(r.status().message().find(c.in_message), std::string::npos)
        << c.text << ": " << r.status().message();
  }
}

TEST(PrefetchGateTest, AtMostTheLimit) {
  PrefetchGate gate(2);
  EXPECT_TRUE(gate.TryAcquire());
  EXPECT_TRUE(gate.TryAcquire());
  EXPECT_FALSE(gate.TryAcquire());
  EXPECT_EQ(gate.running(), 2);
  // The refusal is reported once, to the next Release.
  EXPECT_TRUE(gate.Release());
  EXPECT_TRUE(gate.TryAcquire());
  EXPECT_FALSE(gate.Release());
  EXPECT_FALSE(gate.Release());
  EXPECT_EQ(gate.running(), 0);
  EXPECT_EQ(gate.peak(), 2);
}

TEST(PrefetchGateTest, PauseAndZeroRefuseEverySlot) {
  PrefetchGate gate(3);
  gate.Configure(3, /*paused=*/true);
  EXPECT_FALSE(gate.TryAcquire());
  gate.Configure(0, /*paused=*/false);
  EXPECT_FALSE(gate.TryAcquire());
  gate.Configure(1, /*paused=*/false);
  EXPECT_TRUE(gate.TryAcquire());
  // Lowering the limit keeps slots taken; no new one until below it.
  gate.Configure(0, false);
  EXPECT_EQ(gate.running(), 1);
  EXPECT_FALSE(gate.TryAcquire());
}

TEST(PrefetchGateTest, ConcurrentClaimersNeverExceedTheLimit) {
  PrefetchGate gate(3);
  std::atomic<int> inside{0};
  std::atomic<int> worst{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        if (!gate.TryAcquire()) continue;
        int now = ++inside;
        int w = worst.load();
        while (now > w && !worst.compare_exchange_weak(w, now)) {
        }
        --inside;
        gate.Release();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(worst.load(), 3);
  EXPECT_GE(worst.load(), 1);
  EXPECT_EQ(gate.running(), 0);
}

}  // namespace
}  // namespace sidecar::transfer
