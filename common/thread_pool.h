// ThreadPool: a fixed number of worker threads running queued closures, so
// that gRPC callback reactors never block on disk I/O or on blocking RPCs.
//
//   ThreadPool pool(ThreadPoolOptions{.threads = 4});
//   pool.Schedule([] { ... });
//
// Tasks run in FIFO order of scheduling (several at a time, one per worker).
// The destructor stops accepting new work from outside, runs every task
// already queued (tasks may schedule more tasks while it drains; those run
// too), then joins the workers. Thread-safe.
#ifndef SIDECAR_COMMON_THREAD_POOL_H_
#define SIDECAR_COMMON_THREAD_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace sidecar {

struct ThreadPoolOptions {
  // Number of worker threads; values < 1 mean 1.
  int threads = 4;
  // Bound of the queue for TrySchedule (0: unbounded). Schedule ignores it.
  size_t max_queued = 0;
  // Workers run at this nice value when above 0 (thread_priority.h): for
  // pools of background bulk work.
  int nice = 0;
};

class ThreadPool {
 public:
  explicit ThreadPool(ThreadPoolOptions options = {});
  // Drains the queue, then joins the workers. REQUIRES: not called from a
  // worker of this pool.
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Queues `task`; never blocks (the queue grows as needed). Callers that can
  // produce unbounded work should use TrySchedule. REQUIRES: the destructor
  // has not started, unless called from a task of this pool.
  void Schedule(std::function<void()> task);

  // Queues `task` unless max_queued tasks are already waiting (or the pool is
  // shutting down); returns whether it was queued. Never blocks.
  bool TrySchedule(std::function<void()> task);

  int threads() const { return static_cast<int>(workers_.size()); }
  // Tasks queued and not yet started (a snapshot).
  size_t queued() const;

 private:
  void WorkerLoop() ABSL_LOCKS_EXCLUDED(mu_);
  // The condition workers wait for. REQUIRES: mu_ held.
  bool WorkOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ThreadPoolOptions options_;
  mutable absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // Filled by the constructor and joined by the destructor; only read
  // (threads()) in between, so it needs no lock.
  std::vector<std::thread> workers_;
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_THREAD_POOL_H_
