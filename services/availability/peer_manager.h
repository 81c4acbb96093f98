// PeerManager: the asking side of gossip and failure detection.
//
// The peers are the library's members (Library) with a known address, each
// reached over a mutual-TLS channel pinned to its certificate. Every peer
// has a worker thread that
//   - pings it every ping_interval (round-trip, liveness),
//   - pulls from it (Exchange) every gossip_interval with jitter, soon after
//     it comes online, and prompt_delay after a local change (debounced) or
//     when the peer showed it is ahead of us.
// A peer with no successful contact for offline_after is marked offline and
// no longer offered as a source; its next successful contact brings it back.
// A Hello whose members_digest differs from ours makes the worker run a
// SyncMembers push-pull, so membership spreads within one ping interval. A
// member removed from the library loses its worker and its entries.
// Every call has a deadline; every loop waits on a condition with a deadline
// and ends at Stop().
#ifndef SIDECAR_SERVICES_AVAILABILITY_PEER_MANAGER_H_
#define SIDECAR_SERVICES_AVAILABILITY_PEER_MANAGER_H_

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/device_key.h"
#include "services/availability/library.h"
#include "services/availability/peer_cache.h"
#include "services/availability/peer_directory.h"
#include "services/availability/subscription.h"
#include "services/availability/watch_hub.h"
#include "sidecar/v1/peer.grpc.pb.h"

namespace sidecar::availability {

class AvailabilityMetrics;

struct PeerManagerOptions {
  absl::Duration gossip_interval = absl::Minutes(5);
  double gossip_jitter = 0.2;  // +- fraction of the interval
  absl::Duration prompt_delay = absl::Milliseconds(500);
  absl::Duration ping_interval = absl::Seconds(5);
  absl::Duration offline_after = absl::Seconds(20);
  absl::Duration rpc_timeout = absl::Seconds(5);
  absl::Duration exchange_timeout = absl::Seconds(120);
  // Contact every member; else only those paired with this device
  // directly (it admitted them or they admitted it).
  bool contact_learned_peers = true;
  uint32_t max_message_bytes = 0;  // 0: protocol default
  size_t max_peers = 64;
  // The leaf profile (a phone): mirror of each peer only its own entries
  // that `subscription` names, at most leaf_cache_entries of all peers
  // together; a peer with more is not mirrored (its sidecars are found by
  // delegation) and asked again after over_budget_retry.
  bool leaf = false;
  SubscriptionSpec subscription;
  // Bound on the entries of all peers together (kLeafBytesPerEntry each).
  size_t leaf_cache_entries = 0;
  absl::Duration over_budget_retry = absl::Hours(1);
  // Peers whose Hello says they are leaves are pinged this rarely (battery)
  // and called offline after missing two pings.
  absl::Duration leaf_ping_interval = absl::Seconds(60);
  // A change here prompts a round with a leaf this late, not prompt_delay:
  // a desktop busy importing wakes a phone at most this often.
  absl::Duration leaf_prompt_delay = absl::Seconds(30);
};

// What is known of a device's reachability and speed, for ranking.
struct DeviceStats {
  bool online = false;
  absl::Time last_contact = absl::InfinitePast();
  absl::Duration rtt = absl::ZeroDuration();
  double throughput = 0;  // bytes/s, EWMA of reported transfers
  bool demoted = false;
};

struct PeerStatus {
  std::string address;
  std::optional<Uuid> device_id;
  std::string name;
  std::string transfer_address;
  bool configured = false;  // paired with this device directly
  bool online = false;
  absl::Time last_contact = absl::InfinitePast();
  absl::Duration rtt = absl::ZeroDuration();
  std::string last_error;
  double throughput = 0;
  bool leaf = false;          // its Hello says so
  bool not_mirrored = false;  // this leaf does not mirror it (over budget)
};

class PeerManager : public PeerDirectory {
 public:
  // Pointers must outlive the manager. `library` and `key` may be null only
  // if Start() is never called (in-process benchmarks of the local API).
  PeerManager(PeerManagerOptions options, PeerCache* cache, WatchHub* hub,
              v1::Hello self, Library* library, const DeviceKey* key);
  ~PeerManager() override;

  // Sets the address peers should call us at (known once the server has
  // bound its port).
  void SetSelfPeerAddress(const std::string& address);
  // Sets where peers reach this device's transfer service.
  void SetSelfTransferAddress(const std::string& address);

  // Told what each peer's summary digest says of this device. Set before
  // Start.
  void set_self_view_listener(SelfViewListener l) {
    self_view_listener_ = std::move(l);
  }
  // Sets the generation sent in this device's Hello.
  void SetSelfGeneration(uint64_t generation);

  // Starts a worker per member with an address.
  void Start();

  // Follows a change of the library: workers for new members or new
  // addresses, none for removed members, whose entries are dropped.
  void OnLibraryChange(const Library::Change& change);
  // Stops and joins every worker; in-flight calls end at their deadlines
  // or are cancelled.
  void Stop();

  // Pull from every online peer prompt_delay from now (leaves:
  // leaf_prompt_delay; debounced: changes
  // within the window share one round), so they see our digest and pull.
  void RequestPromptRound();
  // Counts every exchange this device pulls in `metrics` (null: off). Call
  // before Start(); `metrics` must outlive the manager.
  void set_metrics(AvailabilityMetrics* metrics) { metrics_ = metrics; }

  // PeerDirectory:
  v1::Hello SelfHello() const override;
  void OnInboundHello(const v1::Hello& hello, bool caller_is_ahead) override;

  std::vector<PeerStatus> List() const;
  // Stats of every device known by id, for ranking and answers.
  // Members only.
  absl::flat_hash_map<Uuid, DeviceStats> Stats() const;

  // Feedback from the transfer service.
  void ReportTransfer(const Uuid& device, uint64_t bytes,
                      absl::Duration duration, bool ok, bool corrupt);

  struct DirectAnswer {
    Uuid device;
    uint64_t size = 0;
    Sha256Digest sha256{};
  };
  // A member to delegate lookups to (a leaf's WhoHas and Resolve).
  struct Delegate {
    Uuid device;
    std::shared_ptr<v1::Peer::Stub> stub;
  };
  // The online peers that are not leaves: `preferred` (if online) first,
  // then those whose last Exchange summary listed more origins, then by
  // round-trip time.
  std::vector<Delegate> DelegateCandidates(
      const std::optional<Uuid>& preferred) const;

  // Asks every online peer "which of these keys do you have?" in parallel,
  // each call bounded by rpc_timeout. answers[i] lists who has keys[i].
  void QueryPeers(const std::vector<SidecarKey>& keys,
                  std::vector<std::vector<DirectAnswer>>* answers);

 private:
  struct Peer;
  // REQUIRES: mu_ held.
  Peer* AddPeerLocked(const MemberView& member, bool direct)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Peer* FindByDeviceLocked(const Uuid& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Makes peers_ follow the library. Takes mu_.
  void SyncPeers();
  // p's worker: pings and gossip rounds until the manager stops or p is
  // retired. Takes mu_ between calls, never during one.
  void Run(Peer* p);
  // Waits until p is due a contact; false when the worker should end.
  // Sets *round: a gossip round (Exchange) rather than a ping.
  bool AwaitContactLocked(Peer* p, bool* round)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Records how a contact went; true if the members should be synced now.
  bool RecordContactLocked(Peer* p, bool round, const absl::Status& s,
                           const v1::Hello& hello, absl::Duration rtt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // What a call to a peer needs, copied under mu_ (the member may move
  // while the call runs).
  struct CallTarget {
    std::shared_ptr<v1::Peer::Stub> stub;
    std::string address;  // for the log
  };
  // Registers `ctx` as p's call in flight (Stop() cancels it) and returns
  // what to make it on; CANCELLED when stopping. EndCall undoes it.
  // Both take mu_.
  absl::StatusOr<CallTarget> BeginCall(Peer* p, grpc::ClientContext* ctx);
  void EndCall(Peer* p);
  // These run without mu_ held; return OK or why the call failed.
  absl::Status DoPing(Peer* p, v1::Hello* their_hello, absl::Duration* rtt);
  absl::Status DoExchange(Peer* p, v1::Hello* their_hello);
  absl::Status DoSyncMembers(Peer* p);
  void RecordResult(Peer* p, const absl::Status& s, const v1::Hello& hello,
                    absl::Duration rtt) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration NextRoundDelay();
  // How often p is pinged, and how long without contact makes it offline.
  absl::Duration PingInterval(const Peer* p) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Duration OfflineAfter(const Peer* p) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A leaf's subscription for its next pull from p. Drops what is mirrored
  // of p when it switches between mirroring p and not (an over-budget
  // peer), so that the pull brings a whole snapshot.
  v1::Subscription LeafSubscription(Peer* p);
  // After a leaf's pull from p: stops mirroring p if it has more than the
  // budget allows (said so, or grew past it with deltas).
  void CheckLeafBudget(Peer* p, const std::optional<uint64_t>& over_budget);

  const PeerManagerOptions options_;
  PeerCache* const cache_;
  AvailabilityMetrics* metrics_ = nullptr;
  WatchHub* const hub_;
  Library* const library_;
  const DeviceKey* const key_;
  SelfViewListener self_view_listener_;

  mutable absl::Mutex mu_;
  v1::Hello self_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Uuid, DeviceStats> transfer_stats_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Uuid, absl::Time> demoted_until_ ABSL_GUARDED_BY(mu_);
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_PEER_MANAGER_H_
