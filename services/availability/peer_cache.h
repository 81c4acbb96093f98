// PeerCache: what every known origin device advertises, this device included,
// held in memory and rebuilt from gossip after a restart. The own origin is
// fed by LocalInventory and keeps an array of its own (64 bytes per entry);
// remote origins are fed by gossip and share one HolderTable, in which a
// sidecar that several of them hold alike is stored once (about 64 bytes,
// plus 4 per holder).
//
// Thread-safe. Lookups copy the immutable OriginEntries under a reader lock
// and then search without any lock. Changes to remote origins are
// serialized (share_mu_): each rebuilds the shared table without mu_ held.
#ifndef SIDECAR_SERVICES_AVAILABILITY_PEER_CACHE_H_
#define SIDECAR_SERVICES_AVAILABILITY_PEER_CACHE_H_

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/holder_table.h"
#include "services/availability/origin_entries.h"
#include "services/availability/origin_table.h"
#include "services/availability/state_hash.h"
#include "services/availability/watch_hub.h"

namespace sidecar::availability {

// Who sent what we apply about a remote origin: the origin itself, whose
// addresses and name replace ours, or a third device relaying it, whose
// addresses only fill what we do not know yet (a relay must not be able to
// make this device dial somewhere else for a device).
enum class InfoSource { kOrigin, kRelay };

class PeerCache {
 public:
  // `hub` (may be null) receives change events; it must outlive the cache.
  // A remote origin holds at most `max_entries_per_origin` entries.
  PeerCache(OriginInfo self, WatchHub* hub,
            size_t max_entries_per_origin = kMaxEntriesPerOrigin);

  const Uuid& self_id() const { return self_id_; }

  // Installs the own origin's state as loaded from the database (again,
  // after a new generation); `generation_signature` is what peers relay.
  // `entries` may hold several entries per key (the highest seq wins).
  void InitSelf(uint64_t generation, std::string generation_signature,
                uint64_t max_seq, uint64_t floor_seq,
                std::vector<Entry> entries);
  // Drops the own origin's tombstones of seq <= floor and raises its floor
  // (change-log compaction). The copy is made without the lock; the caller
  // serializes own-origin writes (LocalInventory), so none is lost.
  void CompactSelf(uint64_t floor);
  // Applies local changes (already persisted) to the own origin.
  void ApplySelf(std::vector<Entry> changes, uint64_t up_to_seq);
  // The own origin's entry for `key`, or nullptr-equivalent nullopt.
  std::optional<Entry> FindSelf(const EntryKey& key) const;

  // Signs a statement with this device's key (DeviceKey::Sign).
  using Signer = std::function<std::string(absl::string_view statement)>;
  // Lets the cache sign the own origin's heads. Call once, before serving.
  void set_signer(Signer signer) ABSL_LOCKS_EXCLUDED(head_mu_);

  // What ApplyRemoteDelta and ReplaceRemote take about a remote origin:
  // `head` is the origin's signed head that came with it, or null.
  //  - From the origin itself (kOrigin), the head is kept, so that this
  //    device can relay the state once it reaches the head.
  //  - From a relay (kRelay), the head is required and its signature must
  //    have been checked by the caller; the change is applied only if it
  //    brings the cached state to exactly the state the head describes.
  //    PERMISSION_DENIED, changing nothing, otherwise; ABORTED if the
  //    origin's table changed while it was checked (gossip retries).

  // Applies deltas received about a remote origin. Ignored (OK) when the
  // origin is this device; FAILED_PRECONDITION when `generation` is not the
  // one cached (a snapshot must come first); RESOURCE_EXHAUSTED, applying
  // nothing, if the origin would hold more than kMaxEntriesPerOrigin.
  // Publishes ADDED/REMOVED events.
  absl::Status ApplyRemoteDelta(const OriginInfo& info, InfoSource source,
                                uint64_t generation, uint64_t up_to_seq,
                                std::vector<Entry> batch,
                                const SignedHead* head = nullptr)
      ABSL_LOCKS_EXCLUDED(share_mu_, mu_);

  // Replaces all that is known of a remote origin with a snapshot. Ignored
  // when the origin is this device or the cached generation is newer.
  // `entries` need not be sorted. Publishes one RESET event. The caller
  // checks that a new generation comes from the origin or carries its
  // signature (ExchangeReceiver).
  absl::Status ReplaceRemote(const OriginInfo& info, InfoSource source,
                             uint64_t generation, uint64_t max_seq,
                             uint64_t floor_seq, std::vector<Entry> entries,
                             const SignedHead* head = nullptr)
      ABSL_LOCKS_EXCLUDED(share_mu_, mu_);

  // The generation cached for `origin`, 0 if none.
  uint64_t Generation(const Uuid& origin) const;

  // Notes addresses of an origin (from Hello messages), creating an empty
  // record if unknown so it can be contacted and listed.
  void NoteOrigin(const OriginInfo& info);

  // Forgets everything known of a remote origin (a device removed from the
  // library). Publishes one RESET event. Never the own origin.
  void DropOrigin(const Uuid& origin) ABSL_LOCKS_EXCLUDED(share_mu_, mu_);

  // (origin, generation, max_seq) for every origin with any state.
  std::vector<DigestEntry> Digest() const;

  struct OriginView {
    OriginInfo info;
    OriginState state;
    uint64_t live_count = 0;
    OriginEntries entries;
    // The origin's signed head for exactly this state, if this device has
    // it: only then may the state be relayed.
    std::optional<SignedHead> head;
  };
  std::optional<OriginView> View(const Uuid& origin) const;
  std::vector<OriginView> Views() const;

  // The own origin's view (as Views() gives it) together with its signed
  // head, both of one and the same state: what an Exchange answer sends, so
  // that a receiver always gets the head of exactly the entries it gets.
  // nullopt without a signer. The head is made only when the state changed
  // since the last one, rehashing only the changed part (about 65 ms per
  // million entries the first time), outside the lock that lookups take.
  std::optional<OriginView> SignedSelfView() ABSL_LOCKS_EXCLUDED(head_mu_);

  // What Lookup found: At(i, v) is the live entry of views[v] for keys[i],
  // or nullptr. Valid while the views it was made from are.
  class Found {
   public:
    const Entry* At(size_t key, size_t view) const {
      return found_[key * views_ + view];
    }

   private:
    friend class PeerCache;
    size_t views_ = 0;
    std::vector<const Entry*> found_;
    std::deque<Entry> copies_;  // entries read from shared columns
  };
  // Looks every key up in every view. `views` must come from Views().
  static void Lookup(absl::Span<const OriginView> views,
                     absl::Span<const std::optional<EntryKey>> keys,
                     Found* found);

  // Total entries held (tombstones included) across all origins.
  size_t TotalEntries() const;
  // Entries held (tombstones included) of the remote origins, all but
  // `except` if given: what a leaf counts against its mirror budget.
  size_t RemoteEntries(const std::optional<Uuid>& except = std::nullopt) const;

 private:
  // The table of info.device_id, made if missing. A new table starts at
  // generation 0 and empty, so only a snapshot (Replace) can give it a
  // generation: a delta never starts one. An existing table takes the info
  // as UpdateInfo (from the origin itself) or FillInfo (from a relay).
  // REQUIRES: mu_ held.
  OriginTable* FindOrCreate(const OriginInfo& info, InfoSource source,
                            uint64_t generation)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A new remote origin's table, with a free slot. REQUIRES: mu_ held.
  OriginTable* AddRemote(OriginInfo info) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // After a change to remote origin `origin`: moves its entries, if they
  // became an array of their own, into the shared table, or adopts the
  // table its change in place made; and points every remote origin at the
  // new table. Nothing if its entries are in the shared table already.
  void Share(const Uuid& origin) ABSL_EXCLUSIVE_LOCKS_REQUIRED(share_mu_)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Makes `table` the shared table and points every remote origin at it.
  void Repoint(std::shared_ptr<const HolderTable> table)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Whether the state of `candidate` (a changed copy of `origin`'s table) is
  // the one `head` describes: PERMISSION_DENIED, saying how it differs, if
  // not. Sets the head on the candidate if so.
  static absl::Status CheckAgainstHead(const Uuid& origin,
                                       const SignedHead& head,
                                       OriginTable* candidate);
  // ApplyRemoteDelta for a relay's batch (see above).
  absl::Status ApplyRelayedDelta(const OriginInfo& info, uint64_t generation,
                                 uint64_t up_to_seq, std::vector<Entry> batch,
                                 const SignedHead* head,
                                 std::vector<Entry>* changed)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(share_mu_) ABSL_LOCKS_EXCLUDED(mu_);
  // Checks bounds and generation for ApplyRemoteDelta.
  // REQUIRES: mu_ held.
  absl::Status CheckDelta(const OriginTable& t, const Uuid& origin,
                          uint64_t generation,
                          const std::vector<Entry>& batch) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Uuid self_id_;
  WatchHub* const hub_;
  const size_t max_entries_per_origin_;
  // Serializes changes to remote origins (their entries and the shared
  // table). Acquired before mu_.
  absl::Mutex share_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  absl::flat_hash_map<Uuid, std::unique_ptr<OriginTable>> origins_
      ABSL_GUARDED_BY(mu_);
  // The entries of all remote origins, each in the column of its slot.
  std::shared_ptr<const HolderTable> shared_ ABSL_GUARDED_BY(mu_);
  std::vector<HolderTable::Slot> free_slots_ ABSL_GUARDED_BY(mu_);
  HolderTable::Slot next_slot_ ABSL_GUARDED_BY(mu_) = 0;
  // Serializes RefreshSelfHead (its fork and adopt of the own hasher must
  // not interleave). Acquired before mu_.
  absl::Mutex head_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  Signer signer_ ABSL_GUARDED_BY(head_mu_);
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_PEER_CACHE_H_
