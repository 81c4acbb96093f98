// ThreadPool: order, draining at destruction, the TrySchedule bound, and the
// background priority of its workers (thread_priority.h).
#include "common/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "common/thread_priority.h"
#include "gtest/gtest.h"

namespace sidecar {
namespace {

TEST(ThreadPoolTest, OneWorkerRunsTasksInOrder) {
  std::vector<int> order;  // written by the one worker only
  {
    ThreadPool pool({.threads = 1});
    for (int i = 0; i < 100; ++i)
      pool.Schedule([&order, i] { order.push_back(i); });
  }
  ASSERT_EQ(order.size(), 100u);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(order[i], i);
}

TEST(ThreadPoolTest, DestructorRunsQueuedTasksAndTheirFollowUps) {
  std::atomic<int> ran{0};
  absl::Notification release;  // outlives the pool's workers
  {
    ThreadPool pool({.threads = 2});
    pool.Schedule([&] { release.WaitForNotification(); });
    for (int i = 0; i < 10; ++i) {
      pool.Schedule([&] {
        ran++;
        pool.Schedule([&] { ran++; });  // queued while draining: runs too
      });
    }
    release.Notify();
  }
  EXPECT_EQ(ran.load(), 20);
}

TEST(ThreadPoolTest, TryScheduleRefusesBeyondTheBound) {
  absl::Notification started, release;  // outlive the pool's workers
  ThreadPool pool({.threads = 1, .max_queued = 2});
  pool.Schedule([&] {
    started.Notify();
    release.WaitForNotification();
  });
  started.WaitForNotification();  // the worker is busy; the queue is empty
  EXPECT_TRUE(pool.TrySchedule([] {}));
  EXPECT_TRUE(pool.TrySchedule([] {}));
  EXPECT_FALSE(pool.TrySchedule([] {}));
  EXPECT_EQ(pool.queued(), 2u);
  release.Notify();
}

TEST(ThreadPoolTest, BackgroundWorkersRunAtTheirNiceValueAndOthersDoNot) {
  const int before = ThisThreadNice();
  std::atomic<int> worker_nice{-100};
  {
    ThreadPool pool({.threads = 1, .nice = kBackgroundNice});
    pool.Schedule([&] { worker_nice = ThisThreadNice(); });
  }
  // A process already nicer than that (a CI runner's nice 19) keeps its own.
  EXPECT_EQ(worker_nice.load(), std::max(before, kBackgroundNice));
  EXPECT_EQ(ThisThreadNice(), before);  // only the workers were lowered

  std::atomic<int> plain_nice{-100};
  {
    ThreadPool pool({.threads = 1});
    pool.Schedule([&] { plain_nice = ThisThreadNice(); });
  }
  EXPECT_EQ(plain_nice.load(), before);
}

TEST(ThreadPriorityTest, NeverRaisesPriority) {
  int nice = -1;
  std::thread t([&] {
    ASSERT_TRUE(LowerThisThreadPriority(15).ok());
    ASSERT_TRUE(LowerThisThreadPriority(5).ok());   // left at 15
    ASSERT_TRUE(LowerThisThreadPriority(40).ok());  // clamped to 19
    nice = ThisThreadNice();
  });
  t.join();
  EXPECT_EQ(nice, 19);
}

}  // namespace
}  // namespace sidecar
