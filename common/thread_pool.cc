#include "common/thread_pool.h"

#include <utility>

#include "common/log.h"
#include "common/thread_priority.h"

namespace sidecar {

ThreadPool::ThreadPool(ThreadPoolOptions options) : options_(options) {
  int n = options_.threads < 1 ? 1 : options_.threads;
  workers_.reserve(n);
  for (int i = 0; i < n; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Schedule(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  queue_.push_back(std::move(task));
}

bool ThreadPool::TrySchedule(std::function<void()> task) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return false;
  if (options_.max_queued != 0 && queue_.size() >= options_.max_queued) {
    return false;
  }
  queue_.push_back(std::move(task));
  return true;
}

bool ThreadPool::WorkOrStopping() const { return stopping_ || !queue_.empty(); }

size_t ThreadPool::queued() const {
  absl::MutexLock lock(&mu_);
  return queue_.size();
}

void ThreadPool::WorkerLoop() {
  if (options_.nice > 0) {
    absl::Status s = LowerThisThreadPriority(options_.nice);
    if (!s.ok()) SC_LOG(DEBUG) << "thread pool: " << s;
  }
  for (;;) {
    std::function<void()> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &ThreadPool::WorkOrStopping));
      // Drain before exiting: a task queued before (or during) shutdown runs.
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
    }
    task();
  }
}

}  // namespace sidecar
