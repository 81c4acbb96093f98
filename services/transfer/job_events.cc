#include "services/transfer/job_events.h"

#include <optional>

#include "common/ordered_reactor.h"

namespace sidecar::transfer {

class JobEvents::Watcher : public OrderedWriteReactor<v1::JobStatus> {
 public:
  Watcher(JobEvents* hub, std::string job_id)
      : hub_(hub), job_id_(std::move(job_id)) {
    PublishConstruction();
  }

  const std::string& job_id() const { return job_id_; }

  // StartWrite and Finish are called under mu_; gRPC runs the reactions on
  // its own threads, never inline.
  void Push(const v1::JobStatus& s) {
    absl::MutexLock lock(&mu_);
    if (done_sending_) return;
    if (writing_) {
      pending_ = s;  // coalesce: only the newest matters
      return;
    }
    WriteLocked(s);
  }

  void End(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = done_sending_ = true;
    Finish(std::move(status));
  }

  void OnWriteDone(bool ok) override {
    Reaction r(this);
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (finished_) return;
    if (!ok) {
      finished_ = done_sending_ = true;
      Finish(grpc::Status::CANCELLED);
      return;
    }
    if (IsFinalState(current_.state())) {
      finished_ = done_sending_ = true;
      Finish(grpc::Status::OK);
      return;
    }
    if (pending_) {
      v1::JobStatus next = std::move(*pending_);
      pending_.reset();
      WriteLocked(next);
    }
  }

  void OnCancel() override {
    Reaction r(this);
    End(grpc::Status::CANCELLED);
  }

  void OnDone() override {
    ReactionDone(this);
    hub_->Remove(this);
    delete this;
  }

 private:
  // REQUIRES: mu_ held.
  void WriteLocked(const v1::JobStatus& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    current_ = s;
    writing_ = true;
    StartWrite(&current_);
  }

  JobEvents* const hub_;
  const std::string job_id_;
  absl::Mutex mu_;
  v1::JobStatus current_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::JobStatus> pending_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool done_sending_ ABSL_GUARDED_BY(mu_) = false;
};

JobEvents::~JobEvents() { Shutdown(); }

grpc::ServerWriteReactor<v1::JobStatus>* JobEvents::Open(
    const std::string& job_id,
    const std::function<absl::StatusOr<std::optional<v1::JobStatus>>()>&
        current) {
  auto* w = new Watcher(this, job_id);
  {
    absl::MutexLock lock(&mu_);
    by_job_[job_id].insert(w);
    if (shut_down_) {
      w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the transfer service is shutting down"));
      return w;
    }
  }
  absl::StatusOr<std::optional<v1::JobStatus>> now = current();
  if (!now.ok()) {
    w->End(grpc::Status(static_cast<grpc::StatusCode>(now.status().code()),
                        std::string(now.status().message())));
  } else if (!now->has_value()) {
    w->End(grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "no such job; list jobs to see their ids"));
  } else {
    w->Push(**now);
  }
  return w;
}

bool JobEvents::HasWatchers(const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  return by_job_.contains(job_id);
}

void JobEvents::Publish(const v1::JobStatus& status) {
  absl::MutexLock lock(&mu_);
  auto it = by_job_.find(status.job_id());
  if (it == by_job_.end()) return;
  for (Watcher* w : it->second) w->Push(status);
}

void JobEvents::Remove(Watcher* w) {
  absl::MutexLock lock(&mu_);
  auto it = by_job_.find(w->job_id());
  if (it == by_job_.end()) return;
  it->second.erase(w);
  if (it->second.empty()) by_job_.erase(it);
}

void JobEvents::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (auto& [id, set] : by_job_) {
    for (Watcher* w : set) {
      w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "the transfer service is shutting down"));
    }
  }
}

}  // namespace sidecar::transfer
