// LocalInventory: registers and removes this device's sidecars. It decides
// which writes change what is advertised (READY with a new size, checksum or
// generator version, or leaving READY), numbers those changes, persists them
// with the rows in one transaction, and only then updates the in-memory own
// origin, so the cache never advertises what the database does not hold.
#ifndef SIDECAR_SERVICES_AVAILABILITY_LOCAL_INVENTORY_H_
#define SIDECAR_SERVICES_AVAILABILITY_LOCAL_INVENTORY_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/request_limits.h"
#include "services/availability/inventory_store.h"
#include "services/availability/peer_cache.h"
#include "services/availability/self_snapshot.h"

namespace sidecar::availability {

class LocalInventory {
 public:
  // Signs a generation statement of this device (DeviceKey::Sign over
  // GenerationStatement); may be null, then generations go unsigned.
  using GenerationSigner = std::function<std::string(uint64_t generation)>;

  // `on_change` runs after each write that changed what is advertised
  // (e.g. to schedule a prompt gossip round). Pointers must outlive this.
  LocalInventory(InventoryStore* store, PeerCache* cache,
                 std::function<void()> on_change,
                 GenerationSigner sign_generation = nullptr);

  // Lets Load start from the snapshot of the own origin in `path`
  // (SelfSnapshot) and WriteSnapshot write it there. Call before Load.
  void set_snapshot_path(std::string path);

  // Rebuilds the own origin in the cache from the database. Call once.
  // With a snapshot path: from the snapshot if it is of this database's
  // device and generation, not beyond its max seq, not older than its
  // floor, and the row at its max seq is the one it holds; then only the
  // rows logged after it are read. Otherwise (and the reason is logged)
  // from every row. Either way the own origin is the same.
  absl::Status Load();

  // Writes the snapshot of the own origin (none without a snapshot path).
  // Writes and lookups go on meanwhile: the entries are an immutable set,
  // taken with the state they belong to. One at a time. Returns whether it
  // wrote: not when the file already holds this state (the one Load
  // started from or the last one written), as after a run without changes.
  absl::StatusOr<bool> WriteSnapshot();

  // Change-log rows Load read from the database: all of them, or only those
  // logged after the snapshot. Many means a snapshot is worth writing now.
  uint64_t rows_loaded() const;

  // Starts a new generation of the change log (InventoryStore::
  // ResetChangeLog) and rebuilds the own origin from it, so that peers
  // replace what they cached of this device with a snapshot. Returns the
  // new generation. Takes seconds for millions of rows; writes wait.
  absl::StatusOr<uint64_t> StartNewGeneration();

  struct RegisterResult {
    uint32_t registered = 0;
    uint32_t changes = 0;
    uint64_t max_seq = 0;
  };
  // REQUIRES: records validated (ValidateRecord), no key twice, at most
  // kMaxKeysPerRequest.
  absl::StatusOr<RegisterResult> Register(std::vector<LocalRecord> records);

  struct RemoveResult {
    uint32_t removed = 0;
    uint32_t not_found = 0;
    uint64_t max_seq = 0;
  };
  // REQUIRES: keys valid, no key twice, at most kMaxKeysPerRequest.
  absl::StatusOr<RemoveResult> Remove(std::vector<SidecarKey> keys);

  uint64_t max_seq() const;
  uint64_t generation() const;
  // Rows in the database's change log, superseded ones included.
  uint64_t log_rows() const;

  struct CompactResult {
    uint64_t deleted = 0;    // change-log rows
    uint64_t floor_seq = 0;  // the floor afterwards
    uint64_t log_rows = 0;   // rows left
  };
  // Compacts the change log: deletes rows superseded by a newer row of
  // their key, and tombstones logged before `tombstones_before` (raising
  // the floor to the highest one dropped), then drops those tombstones from
  // the own origin too. Works through seqs `batch_seqs` at a time, each
  // batch one transaction under the write lock (writes wait for one batch
  // at most), then VACUUMs the table so its space is reused. Stops early,
  // OK, if a new generation starts meanwhile.
  absl::StatusOr<CompactResult> CompactLog(absl::Time tombstones_before,
                                           uint64_t batch_seqs = 100000);
  // Whether CompactLog is due: the log holds more than 1.5 rows per live
  // entry and has grown since the last pass by half the live entries, or
  // tombstones wait and the last pass is older than `retention`.
  bool CompactionDue(absl::Duration retention) const;

  // Checks one record as received over the API: READY needs a 32-byte
  // checksum; size at most 1 TiB; generator_version at most 128 bytes of
  // UTF-8 without control characters (ValidateGeneratorVersion).
  static absl::Status ValidateRecord(const LocalRecord& r);

 private:
  // Builds the own origin from the database, starting from the snapshot
  // if `use_snapshot` and it is usable.
  absl::Status LoadLocked(bool use_snapshot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // The snapshot, if there is one and it describes the database whose
  // change log reached `max_seq` with floor `floor`; logs why not if not.
  // Errors are the database's.
  absl::StatusOr<std::optional<SelfSnapshot>> UsableSnapshot(uint64_t max_seq,
                                                             uint64_t floor)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);
  // Whether the change-log row `row` is the entry of `snapshot` with the
  // same seq (a database restored or rewritten under the file differs).
  static bool SnapshotHoldsRow(const SelfSnapshot& snapshot,
                               const ChangeRecord& row);
  // The change-log rows with seq > `after_seq` as entries (a key may come
  // more than once).
  absl::StatusOr<Entries> LoadRows(uint64_t after_seq)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(write_mu_);

  InventoryStore* const store_;
  PeerCache* const cache_;
  const std::function<void()> on_change_;
  const GenerationSigner sign_generation_;
  // Serializes writes so that change-log seqs commit in order: a peer that
  // has seen seq n has seen everything below n.
  mutable absl::Mutex write_mu_;
  uint64_t max_seq_ ABSL_GUARDED_BY(write_mu_) = 0;
  uint64_t log_rows_ ABSL_GUARDED_BY(write_mu_) = 0;
  // CompactionDue: the last pass and the row count at which the next one
  // is due by growth alone.
  absl::Time last_compaction_ ABSL_GUARDED_BY(write_mu_);
  uint64_t compact_at_rows_ ABSL_GUARDED_BY(write_mu_) = 0;
  std::string snapshot_path_ ABSL_GUARDED_BY(write_mu_);
  uint64_t rows_loaded_ ABSL_GUARDED_BY(write_mu_) = 0;
  // What the snapshot file holds, if this process knows it (it started
  // from it or wrote it): the same state need not be written again.
  std::optional<SelfSnapshotInfo> on_disk_ ABSL_GUARDED_BY(write_mu_);
  // Serializes WriteSnapshot (one temporary file). Never held with
  // write_mu_ for long: the file is written with write_mu_ released.
  absl::Mutex snapshot_mu_ ABSL_ACQUIRED_BEFORE(write_mu_);
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_LOCAL_INVENTORY_H_
