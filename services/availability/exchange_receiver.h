// ExchangeReceiver: the asking side's handling of one Exchange answer. It
// takes the peer's messages one at a time, validates them, and applies to
// the PeerCache what arrived whole: deltas in slices, snapshots at their
// last part. Everything a peer sends is treated as hostile; what it may cost
// this device is bounded (gossip_protocol.h):
//   - entries held before they are applied: kMaxPendingEntries; a
//     snapshot's size hint reserves nothing;
//   - entries kept per origin: kMaxEntriesPerOrigin (PeerCache);
//   - messages per answer: kMaxExchangeMessages;
//   - variant names: kMaxBatchVariants per batch, and never the share of
//     the dictionary kept for this device's own sidecars (VariantDict);
//   - origins: members only; the own origin is never taken from a peer;
//   - addresses: only well-formed ones, and a relay's only fill gaps.
// Nobody but X can change what this device believes X advertises:
//   - a new generation of origin X replaces what is cached of X only when
//     the sender is X or the batch carries X's signature over it;
//   - within a generation, what a relay sends about X is applied only if it
//     brings the cached state of X to exactly the state of a head that X
//     signed (state_hash.h). Relayed deltas are therefore held until the
//     batch that reaches the head's seq, and applied at once.
//
// Not thread-safe: one receiver per answer stream, used by one thread.
#ifndef SIDECAR_SERVICES_AVAILABILITY_EXCHANGE_RECEIVER_H_
#define SIDECAR_SERVICES_AVAILABILITY_EXCHANGE_RECEIVER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/device_key.h"
#include "common/uuid.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/member_keys.h"
#include "services/availability/peer_cache.h"
#include "sidecar/v1/peer.pb.h"

namespace sidecar::availability {

// Whether `signature` is `origin`'s signature over GenerationStatement.
bool VerifyGeneration(const DeviceCertificate& origin, uint64_t generation,
                      absl::string_view signature);

// The bounds of one answer; tests make them small.
struct ReceiveLimits {
  size_t max_pending_entries = kMaxPendingEntries;
  size_t max_messages = kMaxExchangeMessages;
};

class ExchangeReceiver {
 public:
  // `sender` is the authenticated device that answers. Pointers must
  // outlive the receiver.
  ExchangeReceiver(PeerCache* cache, const MemberKeys* members, Uuid sender,
                   ReceiveLimits limits = {});

  // Takes the next message of the answer. An error means the peer sent
  // something malformed (INVALID_ARGUMENT) or beyond a bound
  // (RESOURCE_EXHAUSTED): the caller should end the stream and call Finish.
  // Batches that are valid but not acceptable (a non-member's, our own, a
  // relay's unsigned new generation) are skipped and counted.
  absl::Status OnMessage(const v1::ExchangeResponse& msg);

  // Applies the pending deltas (a consistent prefix: they arrived in seq
  // order) and drops partial snapshots. Call once, at the end of the stream.
  // RESOURCE_EXHAUSTED if an origin would exceed its bound (the rest is
  // still applied).
  absl::Status Finish();

  // Whether anything was applied to the cache.
  bool learned() const { return learned_; }
  // What was applied: whole snapshots, and origins' deltas.
  size_t snapshots_applied() const { return snapshots_applied_; }
  size_t deltas_applied() const { return deltas_applied_; }
  // The sender's Hello from the answer's summary, if one came.
  const std::optional<v1::Hello>& summary_hello() const { return hello_; }
  // The sender's digest from the summary; empty if none came.
  const google::protobuf::RepeatedPtrField<v1::OriginDigest>& summary_digest()
      const {
    return digest_;
  }
  // Snapshots of a new generation skipped because a relay sent them
  // without the origin's signature.
  size_t unsigned_generations_skipped() const { return unsigned_skipped_; }
  // Origin states a relay sent that its origin did not sign (no head, a
  // bad signature, or entries that do not make the signed state): skipped.
  size_t relayed_states_refused() const { return relayed_refused_; }
  // Why the first of them was refused; OK if none was.
  const absl::Status& first_relayed_refusal() const {
    return first_relayed_refusal_;
  }
  // When the sender said its entries matching this device's subscription
  // are too many to send (EntryBatch.over_budget): how many it has.
  const std::optional<uint64_t>& over_budget() const { return over_budget_; }
  // Entries held now, and the capacity reserved for them (bytes).
  size_t pending_entries() const { return pending_entries_; }
  size_t pending_capacity_bytes() const;

 private:
  struct Pending {
    OriginInfo info;
    InfoSource source = InfoSource::kRelay;
    uint64_t generation = 0;
    uint64_t up_to_seq = 0;
    uint64_t floor_seq = 0;
    std::optional<SignedHead> head;  // of the latest batch
    std::vector<Entry> entries;      // deltas
    // A snapshot's parts, one per message, joined once at its last part: a
    // single array of the exact size, instead of regrowing (and copying
    // and faulting in) one array for every doubling.
    std::vector<std::vector<Entry>> parts;
    size_t part_entries = 0;
    size_t held() const { return entries.size() + part_entries; }
  };

  absl::Status OnDelta(const v1::EntryBatch& b, Pending header);
  absl::Status OnSnapshot(const v1::EntryBatch& b, Pending header);
  // Decodes `b` into `out`, keeping pending_entries_ within its bound.
  absl::Status Decode(const v1::EntryBatch& b, std::vector<Entry>* out);
  // Whether a snapshot of `header`'s generation may replace the cache's.
  bool MayStartGeneration(const Pending& header);
  // Applies and forgets origin's pending deltas. RESOURCE_EXHAUSTED if the
  // origin would exceed kMaxEntriesPerOrigin; other refusals (a stale
  // generation, a relay's state the origin did not sign) are logged and
  // counted.
  absl::Status FlushDelta(const Uuid& origin);
  // Whether a relay's pending deltas reach the seq of their head, so that
  // the result can be checked against it.
  static bool ReachesHead(const Pending& p) {
    return p.head && p.head->generation == p.generation &&
           p.up_to_seq == p.head->max_seq;
  }
  // For a relay's batch: whether `head` is present and signed by `origin`
  // (checked once per head and answer). Counts a refusal if not.
  bool HeadIsSigned(const Uuid& origin, const std::optional<SignedHead>& head);
  // Counts a relayed state refused, keeping the first reason.
  void RefuseRelayed(absl::Status why);

  PeerCache* const cache_;
  const MemberKeys* const members_;
  const Uuid sender_;
  const ReceiveLimits limits_;
  absl::flat_hash_map<Uuid, Pending> deltas_;
  absl::flat_hash_map<Uuid, Pending> snapshots_;
  // Generations whose signature was checked in this answer, per origin.
  absl::flat_hash_map<Uuid, uint64_t> verified_;
  // Snapshots being skipped (origin -> generation): unsigned, from a relay.
  absl::flat_hash_map<Uuid, uint64_t> skipped_;
  size_t messages_ = 0;
  size_t pending_entries_ = 0;
  size_t unsigned_skipped_ = 0;
  // Heads whose signature was checked in this answer, per origin.
  absl::flat_hash_map<Uuid, SignedHead> signed_heads_;
  size_t relayed_refused_ = 0;
  absl::Status first_relayed_refusal_;
  bool learned_ = false;
  size_t snapshots_applied_ = 0;
  size_t deltas_applied_ = 0;
  std::optional<uint64_t> over_budget_;
  std::optional<v1::Hello> hello_;
  google::protobuf::RepeatedPtrField<v1::OriginDigest> digest_;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_EXCHANGE_RECEIVER_H_
