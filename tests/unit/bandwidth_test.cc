// Bandwidth: foreground first, and the caps on everything and on prefetch.
#include "services/transfer/bandwidth.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "absl/time/clock.h"

namespace sidecar::transfer {
namespace {

// Runs Take(bytes, p) on a thread; done() tells whether it returned.
class Taker {
 public:
  Taker(Bandwidth* bw, uint64_t bytes, v1::Priority p)
      : thread_([this, bw, bytes, p] {
          bw->Take(bytes, p);
          done_ = true;
        }) {}
  ~Taker() { thread_.join(); }
  bool done() const { return done_; }
  // Waits up to `timeout` for Take to return.
  bool WaitDone(absl::Duration timeout) const {
    absl::Time until = absl::Now() + timeout;
    while (!done_ && absl::Now() < until) absl::SleepFor(absl::Milliseconds(5));
    return done_;
  }

 private:
  std::atomic<bool> done_{false};
  std::thread thread_;
};

TEST(BandwidthTest, InteractiveWorkPausesNormalAndPrefetchUntilItEnds) {
  Bandwidth bw(0, 0);
  auto lease = bw.Begin(v1::PRIORITY_INTERACTIVE);
  EXPECT_TRUE(bw.Yielding(v1::PRIORITY_NORMAL));
  EXPECT_TRUE(bw.Yielding(v1::PRIORITY_PREFETCH));
  EXPECT_FALSE(bw.Yielding(v1::PRIORITY_INTERACTIVE));
  Taker normal(&bw, 1000, v1::PRIORITY_NORMAL);
  Taker prefetch(&bw, 1000, v1::PRIORITY_PREFETCH);
  Taker interactive(&bw, 1000, v1::PRIORITY_INTERACTIVE);
  EXPECT_TRUE(interactive.WaitDone(absl::Seconds(5)));
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(normal.done());
  EXPECT_FALSE(prefetch.done());
  lease = Bandwidth::Lease();  // the interactive transfer ends
  EXPECT_TRUE(normal.WaitDone(absl::Seconds(5)));
  EXPECT_TRUE(prefetch.WaitDone(absl::Seconds(5)));
  EXPECT_FALSE(bw.Yielding(v1::PRIORITY_PREFETCH));
}

TEST(BandwidthTest, NormalWorkPausesOnlyPrefetch) {
  Bandwidth bw(0, 0);
  auto lease = bw.Begin(v1::PRIORITY_NORMAL);
  EXPECT_FALSE(bw.Yielding(v1::PRIORITY_NORMAL));
  EXPECT_TRUE(bw.Yielding(v1::PRIORITY_PREFETCH));
  {
    Taker normal(&bw, 1000, v1::PRIORITY_UNSPECIFIED);  // counts as normal
    EXPECT_TRUE(normal.WaitDone(absl::Seconds(5)));
  }
  Taker prefetch(&bw, 1000, v1::PRIORITY_PREFETCH);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_FALSE(prefetch.done());
  {
    // A moved lease still holds; the moved-from one releases nothing.
    Bandwidth::Lease moved = std::move(lease);
    absl::SleepFor(absl::Milliseconds(50));
    EXPECT_FALSE(prefetch.done());
  }
  EXPECT_TRUE(prefetch.WaitDone(absl::Seconds(5)));
}

TEST(BandwidthTest, PrefetchLeasesPauseNobody) {
  Bandwidth bw(0, 0);
  auto a = bw.Begin(v1::PRIORITY_PREFETCH);
  auto b = bw.Begin(v1::PRIORITY_PREFETCH);
  EXPECT_FALSE(bw.Yielding(v1::PRIORITY_PREFETCH));
  Taker prefetch(&bw, 1000, v1::PRIORITY_PREFETCH);
  EXPECT_TRUE(prefetch.WaitDone(absl::Seconds(5)));
}

TEST(BandwidthTest, CancelEndsThePause) {
  Bandwidth bw(0, 0);
  auto lease = bw.Begin(v1::PRIORITY_INTERACTIVE);
  Taker prefetch(&bw, 1000, v1::PRIORITY_PREFETCH);
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(prefetch.done());
  bw.Cancel();
  EXPECT_TRUE(prefetch.WaitDone(absl::Seconds(5)));
}

TEST(BandwidthTest, TheBackgroundCapHoldsPrefetchOnly) {
  // 1 MB/s for prefetch, with a one-second burst: 1.5 MB at once costs
  // prefetch half a second, and normal work nothing.
  Bandwidth bw(0, 1e6);
  absl::Time t0 = absl::Now();
  bw.Take(1'500'000, v1::PRIORITY_NORMAL);
  EXPECT_LT(absl::Now() - t0, absl::Milliseconds(200));
  t0 = absl::Now();
  bw.Take(1'500'000, v1::PRIORITY_PREFETCH);
  EXPECT_GT(absl::Now() - t0, absl::Milliseconds(350));
}

TEST(BandwidthTest, TheTotalCapHoldsEveryPriority) {
  Bandwidth bw(1e6, 0);
  absl::Time t0 = absl::Now();
  bw.Take(1'500'000, v1::PRIORITY_INTERACTIVE);
  EXPECT_GT(absl::Now() - t0, absl::Milliseconds(350));
}

}  // namespace
}  // namespace sidecar::transfer
