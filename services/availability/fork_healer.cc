#include "services/availability/fork_healer.h"

#include <utility>

#include "common/log.h"

namespace sidecar::availability {

ForkHealer::ForkHealer(LocalInventory* inventory, PeerCache* cache,
                       std::function<void(uint64_t)> on_healed,
                       std::string mark_path, absl::Duration min_interval)
    : inventory_(inventory),
      cache_(cache),
      on_healed_(std::move(on_healed)),
      mark_path_(std::move(mark_path)),
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

void ForkHealer::UpdateMark(LogPosition* written) {
  if (mark_path_.empty()) return;
  std::optional<PeerCache::OriginView> self = cache_->View(cache_->self_id());
  if (!self || self->state.generation == 0) return;
  LogPosition now{self->state.generation, self->state.max_seq};
  if (now.generation == written->generation &&
      now.max_seq == written->max_seq) {
    return;
  }
  if (absl::Status s = WriteLogMark(mark_path_, now); !s.ok()) {
    SC_LOG(WARNING) << "change-log mark: " << s.message();
    return;
  }
  *written = now;
}

void ForkHealer::Heal(const DigestEntry& claim, const Uuid& claimant) {
  // Checked again: another peer's claim may have been healed meanwhile.
  if (!ProvesFork(claim)) return;
  SC_LOG(WARNING) << "peer " << claimant.ToString()
                  << " knows this device's change log up to generation "
                  << claim.generation << " seq " << claim.max_seq
                  << ", more than the database holds (restored or failed "
                     "over?); starting a new generation";
  absl::StatusOr<uint64_t> generation = inventory_->StartNewGeneration();
  if (!generation.ok()) {
    SC_LOG(ERROR) << "cannot start a new generation: " << generation.status();
    return;
  }
  SC_LOG(INFO) << "new generation " << *generation
               << " after a fork of the change log";
  if (on_healed_) on_healed_(*generation);
}

void ForkHealer::NoteChange() {
  absl::MutexLock lock(&mu_);
  changed_ = true;
}

void ForkHealer::Run() {
  // While the log moves, the mark is written at most once per interval.
  constexpr absl::Duration kMarkInterval = absl::Seconds(1);
  absl::Time last_try = absl::InfinitePast();
  LogPosition written;
  while (true) {
    std::optional<std::pair<DigestEntry, Uuid>> claim;
    bool mark = false;
    {
      absl::MutexLock lock(&mu_);
      auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || requested_ || changed_;
      };
      mu_.Await(absl::Condition(&woken));  // no timer while idle
      if (stopping_) break;
      // A heal costs a snapshot to every peer: at most one per interval.
      if (requested_ && absl::Now() >= last_try + min_interval_) {
        claim.emplace(claim_, claimant_);
        requested_ = false;
      }
      mark = std::exchange(changed_, false);
      if (!claim && !mark) {
        // A heal that must wait out the interval. A change of the log
        // meanwhile wakes it: the next pass marks it (within about a
        // second, as NoteChange promises) and then comes back here to wait
        // out what is left of the interval.
        auto stop_or_change = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stopping_ || changed_;
        };
        mu_.AwaitWithDeadline(absl::Condition(&stop_or_change),
                              last_try + min_interval_);
        continue;
      }
    }
    if (claim) {
      last_try = absl::Now();
      Heal(claim->first, claim->second);
    }
    if (mark) UpdateMark(&written);
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), kMarkInterval);
  }
  UpdateMark(&written);
}

}  // namespace sidecar::availability
