#include "services/availability/fork_healer.h"

#include "common/log.h"

namespace sidecar::availability {

ForkHealer::ForkHealer(LocalInventory* inventory, PeerCache* cache,
                       std::function<void(uint64_t)> on_healed,
                       absl::Duration min_interval)
    : inventory_(inventory),
      cache_(cache),
      on_healed_(std::move(on_healed)),
      min_interval_(min_interval),
      thread_([this] { Run(); }) {}

ForkHealer::~ForkHealer() { Stop(); }

void ForkHealer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

uint64_t ForkHealer::heals() const {
  absl::MutexLock lock(&mu_);
  return heals_;
}

bool ForkHealer::ProvesFork(const DigestEntry& view) const {
  std::optional<PeerCache::OriginView> self = cache_->View(cache_->self_id());
  if (!self || self->state.generation == 0) return false;  // not loaded yet
  return RemoteIsAhead(&self->state, view);
}

void ForkHealer::OnPeerView(const Uuid& peer, const DigestEntry& view) {
  if (view.origin != cache_->self_id() || !ProvesFork(view)) return;
  absl::MutexLock lock(&mu_);
  if (requested_ || stopping_) return;
  requested_ = true;
  claim_ = view;
  claimant_ = peer;
}

void ForkHealer::Run() {
  absl::Time last_try = absl::InfinitePast();
  while (true) {
    DigestEntry claim;
    Uuid claimant;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || requested_;
      };
      mu_.Await(absl::Condition(&ready));
      // A heal costs a snapshot to every peer: at most one per interval.
      auto stop = [this]()
                      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithDeadline(absl::Condition(&stop), last_try + min_interval_);
      if (stopping_) return;
      claim = claim_;
      claimant = claimant_;
    }
    last_try = absl::Now();
    bool healed = false;
    // Checked again: another peer's claim may have been healed meanwhile.
    if (ProvesFork(claim)) {
      SC_LOG(WARNING) << "peer " << claimant.ToString()
                      << " knows this device's change log up to generation "
                      << claim.generation << " seq " << claim.max_seq
                      << ", more than the database holds (restored or "
                         "failed over?); starting a new generation";
      absl::StatusOr<uint64_t> generation = inventory_->StartNewGeneration();
      if (generation.ok()) {
        SC_LOG(INFO) << "new generation " << *generation
                     << " after a fork of the change log";
        if (on_healed_) on_healed_(*generation);
        healed = true;
      } else {
        SC_LOG(ERROR) << "cannot start a new generation: "
                      << generation.status();
      }
    }
    absl::MutexLock lock(&mu_);
    requested_ = false;
    if (healed) ++heals_;
  }
}

}  // namespace sidecar::availability
