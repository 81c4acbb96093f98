// ForkHealer: heals a change log that went back in time.
//
// A device's database can be restored from an older backup, or fail over to
// a lagging replica. Its change log then forks from what peers cached: they
// keep listing sidecars it no longer has, and the seqs it hands out anew are
// ones they believe they have seen. A peer whose digest knows more of this
// device's current generation than the device itself holds (a newer
// generation, or the same one with a higher seq) proves such a fork. The
// healer then starts a new generation (LocalInventory::StartNewGeneration),
// which every peer takes as a snapshot of what the device really holds, in
// the next gossip round.
//
// The healer's thread also keeps the change-log mark (log_mark.h) up to date,
// at most a second behind the log (NoteChange), so that a start on a database
// that went back in time is caught before any peer is asked. An idle device's
// healer sleeps without a timer.
//
// Thread-safe. OnPeerView never blocks on the database: the heal runs on the
// healer's own thread, at most once per `min_interval`, so a confused or
// hostile peer that keeps claiming a fork costs at most that.
#ifndef SIDECAR_SERVICES_AVAILABILITY_FORK_HEALER_H_
#define SIDECAR_SERVICES_AVAILABILITY_FORK_HEALER_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/local_inventory.h"
#include "services/availability/log_mark.h"
#include "services/availability/peer_cache.h"

namespace sidecar::availability {

class ForkHealer {
 public:
  // `on_healed` runs on the healer's thread after each new generation.
  // `mark_path` (may be empty: none) is where the change-log mark is kept.
  // Pointers must outlive the healer.
  ForkHealer(LocalInventory* inventory, PeerCache* cache,
             std::function<void(uint64_t generation)> on_healed,
             std::string mark_path,
             absl::Duration min_interval = absl::Seconds(10));
  ~ForkHealer();  // Stop()

  // What peer `peer` says it knows of this device (an entry of its digest
  // whose origin is this device). Cheap; never blocks on I/O.
  void OnPeerView(const Uuid& peer, const DigestEntry& view);

  // The own change log moved (a commit or a new generation): the mark is
  // written within about a second. Cheap; never blocks on I/O.
  void NoteChange() ABSL_LOCKS_EXCLUDED(mu_);

  // Ends the healer's thread after a heal in progress. Idempotent.
  void Stop();

 private:
  // Whether `view` knows more of the own origin than the cache shows.
  bool ProvesFork(const DigestEntry& view) const;
  // Writes the own origin's position to the mark if it moved since
  // `*written`.
  void UpdateMark(LogPosition* written);
  void Heal(const DigestEntry& claim, const Uuid& claimant)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Run() ABSL_LOCKS_EXCLUDED(mu_);

  LocalInventory* const inventory_;
  PeerCache* const cache_;
  const std::function<void(uint64_t)> on_healed_;
  const std::string mark_path_;
  const absl::Duration min_interval_;

  mutable absl::Mutex mu_;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
  // The log moved since the mark was last written (true at start: the
  // first pass writes the mark of what was loaded).
  bool changed_ ABSL_GUARDED_BY(mu_) = true;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  DigestEntry claim_ ABSL_GUARDED_BY(mu_);
  Uuid claimant_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;  // started by the constructor, joined by Stop
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_FORK_HEALER_H_
