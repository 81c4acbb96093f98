// InventoryStore: this device's own sidecars and its append-only change log,
// persisted in PostgreSQL. Schema is applied by versioned migrations on Open.
//
// The store is deliberately dumb about gossip: the caller (LocalInventory)
// decides which writes change what is advertised and assigns change-log
// sequence numbers; the store persists a batch atomically. Thread-safe: calls
// are serialized on one connection.
#ifndef SIDECAR_SERVICES_AVAILABILITY_INVENTORY_STORE_H_
#define SIDECAR_SERVICES_AVAILABILITY_INVENTORY_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/uuid.h"

namespace sidecar::availability {

// One local sidecar as the application registers it.
struct LocalRecord {
  SidecarKey key;
  uint64_t size = 0;
  std::optional<Sha256Digest> sha256;  // required when status is READY
  v1::SidecarStatus status = v1::SIDECAR_STATUS_PENDING;
  std::string generator_version;
  // Fetched from a peer by the transfer service (evictable), rather than
  // generated on this device.
  bool fetched = false;
  // Filled by the store on reads; ignored on writes (a write sets
  // last_used to now).
  absl::Time created_at;
  absl::Time updated_at;
  absl::Time last_used;
};

// READY sidecars of one kind, split by provenance.
struct KindUsage {
  Kind kind = v1::SIDECAR_KIND_UNSPECIFIED;
  uint64_t own_count = 0;
  uint64_t own_bytes = 0;
  uint64_t fetched_count = 0;
  uint64_t fetched_bytes = 0;
};

// One change-log row: key became advertised (READY, with size, checksum and
// generator version) or was withdrawn (removed = true).
struct ChangeRecord {
  uint64_t seq = 0;
  SidecarKey key;
  bool removed = false;
  uint64_t size = 0;
  Sha256Digest sha256{};
  std::string generator_version;
};

struct DeviceIdentity {
  Uuid device_id;
  // Changes whenever the change log is reset; larger is newer.
  uint64_t generation = 0;
  // Set by Open when the database held another device id, now replaced.
  std::optional<Uuid> replaced_device_id;
};

class InventoryStore {
 public:
  // Connects to `conninfo` (libpq syntax), retrying until `connect_timeout`
  // passes; applies pending migrations; loads the identity, creating it on
  // the first start. With `device_id` (the id the device key derives), the
  // identity takes that id: a database that held another id (made before
  // devices had keys, or by another key) keeps its sidecars and starts a
  // new generation under the new id, so peers replace what they cached.
  // Without it, an existing id is kept and a new one is random (tests).
  static absl::StatusOr<std::unique_ptr<InventoryStore>> Open(
      const std::string& conninfo, absl::Duration connect_timeout,
      std::optional<Uuid> device_id = std::nullopt);

  // Without writing anything: the device id of the database if it belongs
  // to a device that was paired (holds another device's membership
  // record), else nullopt. For the start of a device whose key is missing.
  static absl::StatusOr<std::optional<Uuid>> PairedDevice(
      const std::string& conninfo, absl::Duration connect_timeout);

  virtual ~InventoryStore() = default;

  // A copy: ResetChangeLog may replace it meanwhile. Thread-safe.
  virtual DeviceIdentity identity() const = 0;

  // Calls `fn` once per change-log row (READY entries and tombstones), in
  // unspecified order. A key may come more than once (superseded rows that
  // compaction has not removed yet): its row with the highest seq is its
  // latest change. Used at start-up to rebuild the in-memory advertised
  // state; streams the rows in binary form, without a sort in the server.
  virtual absl::Status LoadAdvertised(
      const std::function<void(const ChangeRecord&)>& fn) = 0;

  // As LoadAdvertised, for the rows with seq > `after_seq` only (a start
  // from a snapshot of the own origin taken at that seq). Reads the seq
  // index when they are few.
  virtual absl::Status LoadAdvertisedAfter(
      uint64_t after_seq,
      const std::function<void(const ChangeRecord&)>& fn) = 0;

  // The change-log row of `seq`; nullopt if there is none (never logged,
  // or compacted away). One index lookup: how a start checks that a
  // snapshot taken at `seq` still describes this database.
  virtual absl::StatusOr<std::optional<ChangeRecord>> ChangeAt(
      uint64_t seq) = 0;

  // Highest sequence number the change log reached: its highest row, or the
  // floor if compaction dropped every row above it (0 if empty).
  virtual absl::StatusOr<uint64_t> MaxSeq() = 0;

  // The floor: the highest seq of a tombstone compaction dropped in this
  // generation (0 if none). A peer that has not seen it needs a snapshot.
  virtual absl::StatusOr<uint64_t> FloorSeq() = 0;

  // The highest seq of a row logged before `t`, 0 if none. Reads the newest
  // rows backwards until the first one older than `t`.
  virtual absl::StatusOr<uint64_t> SeqLoggedBefore(absl::Time t) = 0;

  // In one transaction: deletes the change-log rows with from <= seq < to
  // whose seq is not in `keep` (ascending), and raises the floor to `floor`
  // if it is lower. Returns the number of rows deleted. The caller knows
  // which rows are still the latest of their key (see LocalInventory).
  virtual absl::StatusOr<uint64_t> CompactRange(uint64_t from, uint64_t to,
                                                absl::Span<const uint64_t> keep,
                                                uint64_t floor) = 0;

  // VACUUMs the change log on a connection of its own (the store's stays
  // free), so that the space of deleted rows is reused.
  virtual absl::Status VacuumChangeLog() = 0;

  struct ApplyResult {
    uint32_t upserted = 0;
    uint32_t removed = 0;    // rows that existed and were deleted
    uint32_t not_found = 0;  // removes of keys that had no row
  };
  // In one transaction: upserts `upserts` (insert, or update everything but
  // created_at), deletes the rows of `removes`, and appends `changes` to the
  // change log. All or nothing. If the connection was lost (server restart)
  // it reconnects and retries the whole transaction, bounded by a deadline
  // of a few seconds, then fails with UNAVAILABLE. Batches of 10,000 must
  // take well under a second.
  virtual absl::StatusOr<ApplyResult> Apply(
      absl::Span<const LocalRecord> upserts,
      absl::Span<const SidecarKey> removes,
      absl::Span<const ChangeRecord> changes) = 0;

  // Local sidecars in key order (content uuid, kind, variant, format),
  // strictly after `after` if given, at most `limit`, optionally only those
  // with `status`.
  virtual absl::StatusOr<std::vector<LocalRecord>> List(
      const std::optional<SidecarKey>& after, uint32_t limit,
      std::optional<v1::SidecarStatus> status) = 0;

  // One local sidecar, or nullopt.
  virtual absl::StatusOr<std::optional<LocalRecord>> Get(
      const SidecarKey& key) = 0;

  // Sets last_used of the rows of `keys` (those that exist) to `at`, in
  // one statement. At most kMaxKeysPerRequest keys.
  virtual absl::Status TouchUsed(absl::Span<const SidecarKey> keys,
                                 absl::Time at) = 0;

  // What READY sidecars use, per kind (kinds with none are left out).
  virtual absl::StatusOr<std::vector<KindUsage>> Usage() = 0;

  // Fetched READY sidecars (of `kind`, or of any kind if nullopt), least
  // recently used first, at most `limit`.
  virtual absl::StatusOr<std::vector<LocalRecord>> ListEvictable(
      std::optional<Kind> kind, uint32_t limit) = 0;

  // Starts a new generation: deletes the change log and rewrites it as one
  // entry per READY sidecar, seq 1..n, floor 0. Returns the new identity.
  virtual absl::StatusOr<DeviceIdentity> ResetChangeLog() = 0;

  // The library's membership records (serialized v1::MemberRecord), one
  // per device, in unspecified order.
  virtual absl::StatusOr<std::vector<std::string>> LoadMembers() = 0;
  // Inserts or replaces the record of `device`.
  virtual absl::Status SaveMember(const Uuid& device,
                                  const std::string& record) = 0;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_INVENTORY_STORE_H_
