// Library: the devices paired with each other, as this device knows them.
//
// Membership is a set of signed records (peer.proto MemberRecord), one per
// device:
//  - an Introduction: "device D, with this certificate and name, is a member",
//    signed by the member that admitted D (pairing). The first device of a
//    library introduces itself;
//  - optionally a Removal: "D is no longer a member", signed by any member
//    (sidecarctl unpair).
// Records spread by gossip and may be relayed by anyone: a record is
// accepted only when its signature is valid and its signer is a member here
// already. So a device paired only with B is accepted by A because B, whom
// A trusts, introduced it; nobody can introduce itself or forge a removal.
// A removal wins over the introduction it follows; a later introduction (the
// device paired again) wins over an earlier removal.
//
// The records are persisted (InventoryStore) and feed PeerTrust, which the
// peer listener and peer channels consult. Thread-safe.
#ifndef SIDECAR_SERVICES_AVAILABILITY_LIBRARY_H_
#define SIDECAR_SERVICES_AVAILABILITY_LIBRARY_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/device_key.h"
#include "common/peer_trust.h"
#include "common/uuid.h"
#include "services/availability/inventory_store.h"
#include "services/availability/member_keys.h"
#include "sidecar/v1/peer.pb.h"

namespace sidecar::availability {

// At most this many records in a library (and in one SyncMembers message).
inline constexpr size_t kMaxMembers = 256;

// One member as this device sees it.
struct MemberView {
  DeviceCertificate cert;
  std::string name;
  Uuid admitted_by;
  absl::Time admitted_at;
  std::string peer_address;
  std::string transfer_address;
  bool removed = false;
  Uuid removed_by;
  absl::Time removed_at;
};

class Library : public MemberKeys {
 public:
  // What a merge or a local action changed.
  struct Change {
    std::vector<Uuid> added;    // new members (or members paired again)
    std::vector<Uuid> removed;  // members removed
    bool any() const { return !added.empty() || !removed.empty(); }
  };
  using Listener = std::function<void(const Change&)>;

  // `key`, `store` and `trust` must outlive the library.
  Library(const DeviceKey* key, InventoryStore* store, PeerTrust* trust,
          std::string self_name);

  // Loads the persisted records, re-validating each, and makes (and
  // persists) this device's own introduction on the first start.
  absl::Status Load();

  // Called after every change, without locks held, from the thread that
  // made it. Set before Load.
  void set_listener(Listener listener) { listener_ = std::move(listener); }

  // Merges records from a peer. Invalid records (bad signature, unknown
  // signer, malformed) are skipped and counted in `*rejected` (may be
  // null); more than kMaxMembers records are RESOURCE_EXHAUSTED. Accepted
  // records are persisted.
  absl::StatusOr<Change> Merge(const std::vector<v1::MemberRecord>& records,
                               size_t* rejected = nullptr);

  // Pairing, joiner side: trusts `inviter` (verified by the code) and then
  // merges `records` (the inviter's library, this device's introduction
  // included). INVALID_ARGUMENT if they hold no introduction of this
  // device signed by the inviter.
  absl::StatusOr<Change> AcceptInvitation(
      const DeviceCertificate& inviter,
      const std::vector<v1::MemberRecord>& records);

  // Pairing, inviter side: makes, signs and persists the introduction of a
  // new member, returning it. FAILED_PRECONDITION if the library is full.
  absl::StatusOr<v1::MemberRecord> Admit(const DeviceCertificate& cert,
                                         const std::string& name,
                                         const std::string& peer_address,
                                         const std::string& transfer_address);

  // Signs and persists the removal of member `device`. NOT_FOUND if it is
  // not a member; INVALID_ARGUMENT for this device itself.
  absl::StatusOr<v1::MemberRecord> Remove(const Uuid& device);

  // Notes where a member was reached (from its authenticated Hello).
  // Persisted when it changed; returns whether it did.
  bool NoteAddresses(const Uuid& device, const std::string& peer_address,
                     const std::string& transfer_address);

  // All records, for SyncMembers and pairing.
  std::vector<v1::MemberRecord> Records() const;
  // First 8 bytes of a SHA-256 over the signed parts of all records.
  std::string Digest() const;
  // Bumped on every change of membership or addresses.
  uint64_t version() const;

  std::vector<MemberView> List(bool include_removed) const;
  std::optional<MemberView> Find(const Uuid& device) const;
  // MemberKeys:
  bool IsMember(const Uuid& device) const override;
  std::optional<DeviceCertificate> MemberCertificate(
      const Uuid& device) const override;
  const Uuid& self_id() const { return self_id_; }
  // The members' keys, as this library keeps them current.
  const PeerTrust& trust() const { return *trust_; }

 private:
  struct Record {
    v1::MemberRecord proto;
    MemberView view;
  };

  // Validates `r` against the current members; fills `out`.
  // REQUIRES: mu_ held.
  absl::Status ParseRecordLocked(const v1::MemberRecord& r, Record* out) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Merges one validated record; returns what it changed.
  // REQUIRES: mu_ held.
  void ApplyLocked(Record rec, Change* change,
                   std::vector<std::pair<Uuid, std::string>>* to_save)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Recomputes the digest and feeds PeerTrust. REQUIRES: mu_ held.
  void RefreshLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Persists, then tells the listener. Runs without mu_ held.
  void Publish(const Change& change,
               const std::vector<std::pair<Uuid, std::string>>& to_save)
      ABSL_LOCKS_EXCLUDED(mu_);
  v1::Signed SignBody(const std::string& context,
                      const std::string& body) const;

  const DeviceKey* const key_;
  InventoryStore* const store_;
  PeerTrust* const trust_;
  const std::string self_name_;
  const Uuid self_id_;
  Listener listener_;  // set before Load (set_listener), then only read

  mutable absl::Mutex mu_;
  absl::flat_hash_map<Uuid, Record> records_ ABSL_GUARDED_BY(mu_);
  std::string digest_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
};

// Signature contexts, so that a signature over one kind of record can never
// be taken for another.
inline constexpr char kIntroductionContext[] = "sidecar-sync introduction v1";
inline constexpr char kRemovalContext[] = "sidecar-sync removal v1";

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_LIBRARY_H_
