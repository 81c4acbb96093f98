// Evictor: keeps this device's sidecar store within its quota (StoreQuota)
// by evicting fetched sidecars, least recently used first.
//
// Never evicted (unless Options::evict_last_copies): sidecars this device
// generated itself (only those registered as fetched are candidates at
// all), and a sidecar no other online device holds with the same size and
// SHA-256 (the last copy any online member has).
//
// An eviction withdraws, then deletes. Per batch: the keys go to a journal
// (root/.evicting/*.list, synced), Availability.Remove withdraws them (the
// change log tells peers), the files are unlinked, the journal is deleted.
// A crash in between leaves at most files whose sidecars are withdrawn;
// Recover(), at start before any fetch runs, deletes those. An advertised
// sidecar never lacks its file. Readers that have a file open keep reading
// it (POSIX).
//
// Fetches ask Admit() first: a prefetch that would pass the quota is
// refused with a reason for its job; an interactive or normal fetch makes
// room by evicting (and goes ahead even if nothing could be evicted: the
// quota then shows as exceeded, --min_free_bytes still guards the disk).
// An admitted fetch holds an Admission until it has registered its sidecar
// (or failed): its bytes count until then, and after that until a usage
// read that started later (StoreQuota).
// A background thread refreshes the usage from the availability service
// every refresh interval and evicts while what the read found passes the
// quota (e.g. the application registered more, or the quota was lowered);
// not for bytes admissions still count (StoreQuota::ExcessOfRead).
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_TRANSFER_EVICTOR_H_
#define SIDECAR_SERVICES_TRANSFER_EVICTOR_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "services/transfer/availability_client.h"
#include "services/transfer/store_quota.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::transfer {

// Directory of eviction journals, relative to the sidecar root.
inline constexpr absl::string_view kEvictingDir = ".evicting";

struct EvictionCandidate {
  SidecarKey key;
  uint64_t size = 0;
  Sha256Digest sha256{};
};

// The eviction choice: walks `candidates` (least recently used first) and
// takes those with at least one other online holder (`other_holders[i]`,
// or any if `evict_last_copies`) until their sizes reach `need` bytes.
// Returns their indexes, in order.
std::vector<size_t> ChooseEvictions(
    absl::Span<const EvictionCandidate> candidates,
    absl::Span<const int> other_holders, uint64_t need, bool evict_last_copies);

class Evictor {
 public:
  // What eviction needs of the availability service; AvailabilityClient's
  // calls of the same names (see ForAvailability), or a fake in tests.
  class Backend {
   public:
    virtual ~Backend() = default;
    virtual absl::StatusOr<std::vector<v1::KindUsage>> LocalUsage() = 0;
    virtual absl::StatusOr<std::vector<EvictionCandidate>> ListEvictable(
        Kind kind, uint32_t limit) = 0;
    virtual absl::StatusOr<std::vector<int>> OnlineOtherHolders(
        absl::Span<const EvictionCandidate> candidates) = 0;
    virtual absl::StatusOr<uint32_t> Remove(
        absl::Span<const SidecarKey> keys) = 0;
    // Per key: whether it is READY here (registered, advertised).
    virtual absl::StatusOr<std::vector<bool>> ReadyLocally(
        absl::Span<const SidecarKey> keys) = 0;
  };
  // A Backend on `client` (which must outlive it).
  static std::unique_ptr<Backend> ForAvailability(AvailabilityClient* client);

  struct Options {
    std::string root;  // the sidecar root
    QuotaConfig quota;
    absl::Duration refresh_interval = absl::Seconds(10);
    bool evict_last_copies = false;
    // Candidates looked at per round (ListEvictable's limit, <= 10,000).
    uint32_t batch = 1000;
    // Rounds of one MakeRoom, so that a store full of last copies is not
    // walked forever.
    int max_rounds = 20;
  };
  // `backend` must outlive this. Creates root/.evicting if missing.
  Evictor(Options options, Backend* backend);
  ~Evictor();  // Stop()

  bool enabled() const { return options_.quota.enabled(); }

  // The bytes of one admitted fetch, counted in the store's usage while it
  // is held (Admit). Release (or destroy) it once the fetch has registered
  // its sidecar READY or never will (failed, cancelled, stopped): not
  // before, or a usage read in between could miss the fetch. The bytes
  // count on after the release until a read started later is set.
  // Move-only; the Evictor must outlive it.
  class Admission {
   public:
    Admission() = default;  // counts nothing (no quota)
    Admission(Admission&& other) noexcept;
    Admission& operator=(Admission&& other) noexcept;
    Admission(const Admission&) = delete;
    Admission& operator=(const Admission&) = delete;
    ~Admission() { Release(); }

    // The fetch ended (see above). Idempotent.
    void Release();

   private:
    friend class Evictor;
    Admission(Evictor* evictor, Kind kind, uint64_t bytes)
        : evictor_(evictor), kind_(kind), bytes_(bytes) {}

    Evictor* evictor_ = nullptr;  // null: released, or nothing counted
    Kind kind_ = v1::SIDECAR_KIND_UNSPECIFIED;
    uint64_t bytes_ = 0;
  };

  // At start, before any fetch runs: for every journal left by a crash,
  // deletes the files of its keys that are not READY here, then the
  // journal. Keeps a journal it cannot check (availability unreachable) for
  // the next start. Returns how many files it deleted.
  absl::StatusOr<uint64_t> Recover() ABSL_LOCKS_EXCLUDED(evict_mu_);

  // Reads the usage from the availability service. Bytes of admissions
  // still held, or released after the read started, stay counted. Waits
  // for an eviction in progress: a read that overlapped one could miss the
  // evicted sidecars, and the eviction would then take them off again.
  absl::Status Refresh() ABSL_LOCKS_EXCLUDED(mu_, evict_mu_);

  // Starts the background thread: Refresh, then EnforceQuota, every
  // refresh interval. `on_room` (may be null) runs when the store has room
  // again after a prefetch was refused.
  void Start(std::function<void()> on_room = nullptr) ABSL_LOCKS_EXCLUDED(mu_);
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);

  // Before a fetch of `bytes` more of `kind`: the Admission that counts
  // them (empty if there is no quota), or for PRIORITY_PREFETCH
  // RESOURCE_EXHAUSTED with StoreQuota::PrefetchRefusal. Other priorities
  // evict to make room first. Costs a mutex and a few map lookups unless
  // the quota is reached; then, if fetches ended since the last usage read
  // started, the usage is read again first (they may count twice), so that
  // nothing is refused or evicted for bytes that are not there.
  absl::StatusOr<Admission> Admit(v1::Priority priority, Kind kind,
                                  uint64_t bytes)
      ABSL_LOCKS_EXCLUDED(mu_, evict_mu_);

  struct Result {
    uint64_t evicted = 0;
    uint64_t bytes = 0;
    uint64_t kept_last_copies = 0;  // candidates skipped: no other holder
  };
  // Evicts fetched sidecars (of `kind`, or any if UNSPECIFIED), least
  // recently used first, until `need` bytes are freed or no candidate is
  // left. Errors only if nothing could be done at all.
  absl::StatusOr<Result> MakeRoom(Kind kind, uint64_t need)
      ABSL_LOCKS_EXCLUDED(mu_, evict_mu_);
  // Evicts while the usage as read passes a quota (per kind, then in
  // total); admitted bytes do not count here (StoreQuota::ExcessOfRead).
  absl::StatusOr<Result> EnforceQuota() ABSL_LOCKS_EXCLUDED(mu_, evict_mu_);

  // What uses the store, for GetStoreUsage.
  v1::GetStoreUsageResponse Report() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Counts `bytes` of `kind` and returns their Admission if they fit under
  // the quota as counted now; nullopt otherwise.
  std::optional<Admission> AdmitIfRoom(Kind kind, uint64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One round: at most `options_.batch` candidates; evicts those chosen.
  absl::StatusOr<Result> EvictRound(Kind kind, uint64_t need)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(evict_mu_);
  // Journal, withdraw, delete. REQUIRES: evict_mu_ held.
  absl::Status EvictBatch(const std::vector<EvictionCandidate>& batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(evict_mu_);
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  // Admission::Release's.
  void Ended(Kind kind, uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  const Options options_;
  Backend* const backend_;
  const std::string journal_dir_;

  // Serializes evictions, Recover and usage reads (Refresh); taken before
  // mu_. A read either sees an eviction whole, and StoreQuota::Evicted
  // takes its bytes off after it, or does not see it at all.
  absl::Mutex evict_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  uint64_t journal_seq_ ABSL_GUARDED_BY(evict_mu_) = 0;

  mutable absl::Mutex mu_;
  StoreQuota quota_ ABSL_GUARDED_BY(mu_);
  bool refreshed_ ABSL_GUARDED_BY(mu_) = false;
  bool refused_prefetch_ ABSL_GUARDED_BY(mu_) = false;
  // The smallest prefetch refused since (its kind and size): there is room
  // again when it would fit.
  Kind refused_kind_ ABSL_GUARDED_BY(mu_) = v1::SIDECAR_KIND_UNSPECIFIED;
  uint64_t refused_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evicted_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t evicted_bytes_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t kept_last_copies_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> on_room_;
  std::thread thread_;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_EVICTOR_H_
