// The pure logic of anti-entropy gossip (Scuttlebutt reconciliation with a
// snapshot fallback): digests, what to send for each origin, and the
// columnar encoding of entry batches. No I/O here; see peer_service.h (the
// answering side) and peer_manager.h (the asking side).
#ifndef SIDECAR_SERVICES_AVAILABILITY_GOSSIP_PROTOCOL_H_
#define SIDECAR_SERVICES_AVAILABILITY_GOSSIP_PROTOCOL_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "google/protobuf/repeated_ptr_field.h"
#include "services/availability/entry.h"
#include "services/availability/origin_table.h"
#include "services/availability/state_hash.h"
#include "sidecar/v1/peer.pb.h"

namespace sidecar::availability {

inline constexpr size_t kMaxDigestOrigins = 1024;

// Bounds on what one peer may cost this device (see ExchangeReceiver).
// Entries cached per origin: about 1 GiB, and near three times the 6M rows
// of a desktop that holds everything.
inline constexpr size_t kMaxEntriesPerOrigin = size_t{1} << 24;
// Entries of one Exchange answer held before they are applied (snapshots
// are applied whole, at their last part).
inline constexpr size_t kMaxPendingEntries = size_t{1} << 24;
// Messages in one Exchange answer: at the smallest message bound (64 KiB,
// 850 entries), room for 55M entries.
inline constexpr size_t kMaxExchangeMessages = size_t{1} << 16;
// Distinct variant names in one batch (a real vocabulary has about 20).
inline constexpr size_t kMaxBatchVariants = 1024;
// Distinct generator versions in one batch (GeneratorVersionDict's per-peer
// share).
inline constexpr size_t kMaxBatchVersions = 256;

// An Exchange refusal's message (ExchangeRequest.refusal) is cut to this
// many bytes by the device that refused and again by the one told.
inline constexpr size_t kMaxRefusalMessageBytes = 512;

// The status code a received Refusal names: a google.rpc code other than
// OK, or UNKNOWN for anything else a peer may send.
absl::StatusCode RefusalCode(int32_t wire_code);

// Signature context of a generation statement.
inline constexpr char kGenerationContext[] = "sidecar-sync generation v1";

// The bytes an origin signs to start `generation`: the context, the 16-byte
// device id and the generation as 8 big-endian bytes.
std::string GenerationStatement(const Uuid& origin, uint64_t generation);

// Signature context of a head (state_hash.h).
// v2: the state digest covers generator versions.
inline constexpr char kHeadContext[] = "sidecar-sync head v2";

// The bytes an origin signs for a head: the context, the 16-byte device id,
// generation and max_seq as 8 big-endian bytes each, and the state digest.
std::string HeadStatement(const Uuid& origin, const SignedHead& head);

// The head a batch carries, or nullopt if it has none or a malformed one
// (state not 32 bytes, signature not 64, max_seq out of range).
std::optional<SignedHead> HeadFromProto(const v1::OriginInfo& proto);
void HeadToProto(const SignedHead& head, v1::OriginInfo* proto);

// Whether `address` can be dialed as a peer: "host:port" with a port in
// 1..65535 and a host of letters, digits, '.', '-' and '_', or "[v6]:port";
// at most 256 bytes. Addresses that fail are dropped from what peers send.
bool IsDialableAddress(absl::string_view address);
inline constexpr uint32_t kDefaultMessageBytes = 1 << 20;
inline constexpr uint32_t kMinMessageBytes = 64 << 10;
inline constexpr uint32_t kMaxMessageBytesLimit = 4 << 20;

// What a device knows of one origin.
struct DigestEntry {
  Uuid origin;
  uint64_t generation = 0;
  uint64_t max_seq = 0;
};

// Validates a received digest: at most kMaxDigestOrigins, 16-byte ids, no
// duplicates. INVALID_ARGUMENT / RESOURCE_EXHAUSTED otherwise.
absl::StatusOr<std::vector<DigestEntry>> DigestFromProto(
    const google::protobuf::RepeatedPtrField<v1::OriginDigest>& proto);
void DigestToProto(absl::Span<const DigestEntry> digest,
                   google::protobuf::RepeatedPtrField<v1::OriginDigest>* out);

// What the answering side knows of one origin.
struct OriginState {
  uint64_t generation = 0;
  uint64_t max_seq = 0;
  uint64_t floor_seq = 0;  // deltas are complete only above this seq
  uint64_t entry_count = 0;
};

// Told what a peer's digest says of this device's own origin (ForkHealer).
using SelfViewListener =
    std::function<void(const Uuid& peer, const DigestEntry& view)>;

enum class SendPlan { kNothing, kDelta, kSnapshot };

// Decides what to send an asker whose digest says `remote` (nullptr: the
// asker has never heard of the origin) about an origin we know as `local`.
//  - we know nothing of the origin but its address (generation 0): nothing;
//  - asker unaware, or behind a reset (older generation): snapshot, even an
//    empty one, so the asker learns the generation;
//  - asker on a newer generation than ours: nothing (we are the stale one);
//  - same generation: nothing if the asker is up to date, snapshot if it is
//    below our floor (compacted history), deltas otherwise.
SendPlan PlanSend(const OriginState& local, const DigestEntry* remote);

// Whether an asker's digest entry shows something we lack (so we should pull
// from the asker in turn). `local` is nullptr if we do not know the origin.
bool RemoteIsAhead(const OriginState* local, const DigestEntry& remote);

// Deltas larger than this fraction of the table go as a snapshot instead:
// a key-ordered snapshot is cheaper to apply than a seq-ordered delta.
inline bool DeltaBetterAsSnapshot(size_t delta_count, size_t entry_count) {
  return delta_count > 4096 && delta_count * 2 > entry_count;
}

// Entries that fit one message of `max_message_bytes` (about 64 bytes each
// on the wire, with headroom).
size_t EntriesPerMessage(uint32_t max_message_bytes);
// Clamps a requested message bound to [kMinMessageBytes,
// kMaxMessageBytesLimit].
uint32_t ClampMessageBytes(uint32_t requested);

// Fills the entry columns of `batch` from `entries` (not the header fields).
void EncodeEntries(absl::Span<const Entry> entries, v1::EntryBatch* batch);

// Appends the entries of `batch` to `out` after validating every column:
// consistent lengths, known kinds and formats, safe variant names (at most
// kMaxBatchVariants), valid generator versions (ValidateGeneratorVersion, at
// most kMaxBatchVersions), sizes and seqs in range, seqs not above
// `max_seq`. On error nothing is appended and the status says what was
// wrong: INVALID_ARGUMENT, or RESOURCE_EXHAUSTED when the batch names too
// many variants or versions, or a new one would exceed the share of the
// variant or version dictionary that `sender` (the peer the batch came
// from) or all peers may fill.
absl::Status DecodeEntries(const v1::EntryBatch& batch, uint64_t max_seq,
                           const Uuid& sender, std::vector<Entry>* out);

// Validates a Hello from the wire: 16-byte non-nil device id, bounded
// address and name lengths.
absl::Status ValidateHello(const v1::Hello& hello);

OriginInfo OriginInfoFromProto(const v1::OriginInfo& proto, const Uuid& id);
void OriginInfoToProto(const OriginInfo& info, uint64_t generation,
                       v1::OriginInfo* proto);

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_GOSSIP_PROTOCOL_H_
