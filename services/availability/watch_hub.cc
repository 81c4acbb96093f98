#include "services/availability/watch_hub.h"

#include <deque>

#include "absl/strings/str_cat.h"
#include "common/ordered_reactor.h"
#include "common/sidecar_key.h"

namespace sidecar::availability {

class WatchHub::Watcher : public OrderedWriteReactor<v1::AvailabilityEvent> {
 public:
  Watcher(WatchHub* hub, const v1::WatchRequest& req)
      : hub_(hub),
        local_(req.include_local() || !req.include_remote()),
        remote_(req.include_remote() || !req.include_local()) {
    for (int k : req.kinds()) kinds_.push_back(static_cast<Kind>(k));
    PublishConstruction();
  }

  bool Wants(bool is_local, Kind kind) const {
    if (is_local ? !local_ : !remote_) return false;
    if (kinds_.empty() || kind == v1::SIDECAR_KIND_UNSPECIFIED) return true;
    for (Kind k : kinds_)
      if (k == kind) return true;
    return false;
  }

  // Queues an event; never blocks on the network. StartWrite and Finish are
  // called under mu_ so that neither can race the other; gRPC runs the
  // resulting reactions on its own threads, never inline.
  void Push(v1::AvailabilityEvent ev) {
    {
      absl::MutexLock lock(&mu_);
      if (finished_) return;
      if (queue_.size() >= kMaxQueued) {
        finished_ = true;
        queue_.clear();
        Finish(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                            "watcher fell too far behind; list again and "
                            "start a new Watch"));
        return;
      }
      queue_.push_back(std::move(ev));
      if (!writing_) {
        writing_ = true;
        current_ = std::move(queue_.front());
        queue_.pop_front();
        StartWrite(&current_);
      }
    }
  }

  void End(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    finished_ = true;
    Finish(std::move(status));
  }

  void OnWriteDone(bool ok) override {
    Reaction r(this);
    {
      absl::MutexLock lock(&mu_);
      if (!ok || finished_) {
        writing_ = false;
        return;
      }
      if (queue_.empty()) {
        writing_ = false;
      } else {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        StartWrite(&current_);
      }
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
  WatchHub* const hub_;
  const bool local_, remote_;
  std::vector<Kind> kinds_;  // filled by the constructor, then only read
  absl::Mutex mu_;
  std::deque<v1::AvailabilityEvent> queue_ ABSL_GUARDED_BY(mu_);
  v1::AvailabilityEvent current_ ABSL_GUARDED_BY(mu_);  // the write in flight
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

WatchHub::~WatchHub() { Shutdown(); }

grpc::ServerWriteReactor<v1::AvailabilityEvent>* WatchHub::Open(
    const v1::WatchRequest& request) {
  auto* w = new Watcher(this, request);
  absl::MutexLock lock(&mu_);
  if (shut_down_) {
    w->End(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the service is shutting down"));
    // Still registered so OnDone's Remove finds nothing wrong.
  }
  active_.insert(w);
  watchers_.fetch_add(1);
  return w;
}

void WatchHub::Remove(Watcher* w) {
  absl::MutexLock lock(&mu_);
  if (active_.erase(w) > 0) watchers_.fetch_sub(1);
}

void WatchHub::PublishEntries(const Uuid& device, bool is_local,
                              absl::Span<const Entry> changed) {
  if (!HasWatchers() || changed.empty()) return;
  std::string device_id = device.ToString();
  absl::MutexLock lock(&mu_);
  for (const Entry& e : changed) {
    v1::AvailabilityEvent ev;
    ev.set_type(e.removed() ? v1::AvailabilityEvent::TYPE_REMOVED
                            : v1::AvailabilityEvent::TYPE_ADDED);
    ev.set_device_id(device_id);
    ev.set_is_local(is_local);
    KeyToProto(KeyOf(e), ev.mutable_key());
    if (!e.removed()) {
      ev.set_size(e.size());
      ev.set_sha256(std::string(DigestBytes(e.sha256)));
    }
    for (Watcher* w : active_) {
      if (w->Wants(is_local, e.kind())) w->Push(ev);
    }
  }
}

void WatchHub::Publish(const v1::AvailabilityEvent& event) {
  if (!HasWatchers()) return;
  absl::MutexLock lock(&mu_);
  for (Watcher* w : active_) {
    if (w->Wants(event.is_local(), event.key().kind())) w->Push(event);
  }
}

void WatchHub::Shutdown() {
  absl::MutexLock lock(&mu_);
  shut_down_ = true;
  for (Watcher* w : active_) w->End(grpc::Status::OK);
}

}  // namespace sidecar::availability
