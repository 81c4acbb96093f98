#include "services/availability/exchange_receiver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "services/availability/gossip_protocol.h"

namespace sidecar::availability {
namespace {

// Deltas are applied in slices of this many entries so a long stream does
// not hold everything in memory before anything is visible.
constexpr size_t kApplySlice = 1 << 18;

}  // namespace

bool VerifyGeneration(const DeviceCertificate& origin, uint64_t generation,
                      absl::string_view signature) {
  return signature.size() == 64 &&
         VerifySignature(origin,
                         GenerationStatement(origin.device_id, generation),
                         signature);
}

namespace {

// The parts of a snapshot as one array, in order; frees each part as it is
// copied.
std::vector<Entry> JoinParts(std::vector<std::vector<Entry>> parts,
                             size_t total) {
  if (parts.size() == 1) return std::move(parts[0]);
  std::vector<Entry> all;
  ReserveEntries(&all, total);
  for (std::vector<Entry>& part : parts) {
    all.insert(all.end(), part.begin(), part.end());
    std::vector<Entry>().swap(part);
  }
  return all;
}

}  // namespace

ExchangeReceiver::ExchangeReceiver(PeerCache* cache, const MemberKeys* members,
                                   Uuid sender, ReceiveLimits limits)
    : cache_(cache), members_(members), sender_(sender), limits_(limits) {}

size_t ExchangeReceiver::pending_capacity_bytes() const {
  size_t n = 0;
  for (const auto& [id, p] : deltas_) n += p.entries.capacity();
  for (const auto& [id, p] : snapshots_) {
    for (const auto& part : p.parts) n += part.capacity();
  }
  return n * sizeof(Entry);
}

absl::Status ExchangeReceiver::OnMessage(const v1::ExchangeResponse& msg) {
  if (++messages_ > limits_.max_messages) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "exchange answer of more than ", limits_.max_messages, " messages"));
  }
  if (msg.has_summary()) {
    hello_ = msg.summary().self();
    digest_ = msg.summary().digest();
    return absl::OkStatus();
  }
  const v1::EntryBatch& b = msg.batch();
  absl::StatusOr<Uuid> origin = Uuid::FromBytes(b.origin().device_id());
  if (!origin.ok() || origin->IsNil()) {
    return absl::InvalidArgumentError("batch without a valid origin id");
  }
  if (b.up_to_seq() > kMaxSeq) {
    return absl::InvalidArgumentError("batch up_to_seq out of range");
  }
  if (*origin == cache_->self_id()) return absl::OkStatus();  // relayed back
  // Only members' entries are taken, whoever relays them.
  if (!members_->IsMember(*origin)) return absl::OkStatus();
  Pending header;
  header.info = OriginInfoFromProto(b.origin(), *origin);
  header.source = *origin == sender_ ? InfoSource::kOrigin : InfoSource::kRelay;
  header.generation = b.origin().generation();
  header.up_to_seq = b.up_to_seq();
  header.floor_seq = b.floor_seq();
  header.head = HeadFromProto(b.origin());
  if (b.over_budget()) {
    // Answers a subscription (a leaf's): the origin has more matching
    // entries than this device takes. Only the origin may say so of itself.
    if (header.source == InfoSource::kOrigin) {
      over_budget_ = b.snapshot_entries();
    }
    return absl::OkStatus();
  }
  switch (b.mode()) {
    case v1::EntryBatch::MODE_DELTA:
      return OnDelta(b, std::move(header));
    case v1::EntryBatch::MODE_SNAPSHOT:
      return OnSnapshot(b, std::move(header));
    default:
      return absl::InvalidArgumentError("batch of unknown mode");
  }
}

absl::Status ExchangeReceiver::Decode(const v1::EntryBatch& b,
                                      std::vector<Entry>* out) {
  const size_t n = b.kinds().size();
  if (pending_entries_ + n > limits_.max_pending_entries) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "exchange answer would hold more than ", limits_.max_pending_entries,
        " entries before applying them"));
  }
  absl::Status s = DecodeEntries(b, b.up_to_seq(), sender_, out);
  if (s.ok()) pending_entries_ += n;
  return s;
}

absl::Status ExchangeReceiver::OnDelta(const v1::EntryBatch& b,
                                       Pending header) {
  const Uuid origin = header.info.device_id;
  std::optional<SignedHead> head = header.head;
  auto it = deltas_.find(origin);
  if (it != deltas_.end() && it->second.generation != header.generation) {
    SC_RETURN_IF_ERROR(FlushDelta(origin));
    it = deltas_.end();
  }
  if (it == deltas_.end()) {
    it = deltas_.emplace(origin, std::move(header)).first;
  }
  SC_RETURN_IF_ERROR(Decode(b, &it->second.entries));
  Pending& p = it->second;
  p.up_to_seq = b.up_to_seq();
  p.head = std::move(head);
  // The origin's own deltas apply in slices; a relay's only whole, once
  // they reach the head they can be checked against.
  if (p.source == InfoSource::kOrigin ? p.entries.size() >= kApplySlice
                                      : ReachesHead(p)) {
    return FlushDelta(origin);
  }
  return absl::OkStatus();
}

bool ExchangeReceiver::HeadIsSigned(const Uuid& origin,
                                    const std::optional<SignedHead>& head) {
  if (!head) {
    RefuseRelayed(absl::PermissionDeniedError(
        absl::StrCat("relayed state of origin ", origin.ToString(),
                     " without the origin's signed head")));
    return false;
  }
  if (auto v = signed_heads_.find(origin);
      v != signed_heads_.end() && v->second == *head) {
    return true;
  }
  std::optional<DeviceCertificate> cert = members_->MemberCertificate(origin);
  if (!cert ||
      !VerifySignature(*cert, HeadStatement(origin, *head), head->signature)) {
    RefuseRelayed(absl::PermissionDeniedError(
        absl::StrCat("relayed head of origin ", origin.ToString(), " (seq ",
                     head->max_seq, ") is not signed by it")));
    return false;
  }
  signed_heads_[origin] = *head;
  return true;
}

void ExchangeReceiver::RefuseRelayed(absl::Status why) {
  SC_LOG(DEBUG) << "from " << sender_.ToString() << ": " << why;
  if (relayed_refused_++ == 0) first_relayed_refusal_ = std::move(why);
}

bool ExchangeReceiver::MayStartGeneration(const Pending& header) {
  const Uuid& origin = header.info.device_id;
  if (header.source == InfoSource::kOrigin) return true;
  if (header.generation <= cache_->Generation(origin)) return true;
  if (auto v = verified_.find(origin);
      v != verified_.end() && v->second == header.generation) {
    return true;
  }
  std::optional<DeviceCertificate> cert = members_->MemberCertificate(origin);
  if (!cert || !VerifyGeneration(*cert, header.generation,
                                 header.info.generation_signature)) {
    return false;
  }
  verified_[origin] = header.generation;
  return true;
}

absl::Status ExchangeReceiver::OnSnapshot(const v1::EntryBatch& b,
                                          Pending header) {
  const Uuid origin = header.info.device_id;
  if (b.first()) {
    if (auto old = snapshots_.find(origin); old != snapshots_.end()) {
      pending_entries_ -= old->second.held();
      snapshots_.erase(old);
    }
    skipped_.erase(origin);
    if (!MayStartGeneration(header)) {
      ++unsigned_skipped_;
      skipped_[origin] = header.generation;
      SC_LOG(DEBUG) << "snapshot of origin " << origin.ToString()
                    << " generation " << header.generation << " relayed by "
                    << sender_.ToString()
                    << " without the origin's signature: skipped";
      return absl::OkStatus();
    }
    // No reserve: the size hint is the peer's word, and memory is spent
    // only as entries arrive.
    snapshots_.emplace(origin, std::move(header));
  }
  auto it = snapshots_.find(origin);
  if (it == snapshots_.end() ||
      it->second.generation != b.origin().generation()) {
    auto skip = skipped_.find(origin);
    if (skip != skipped_.end() && skip->second == b.origin().generation()) {
      return absl::OkStatus();  // the rest of a skipped snapshot
    }
    return absl::InvalidArgumentError("snapshot part without its first part");
  }
  Pending& part_of = it->second;
  std::vector<Entry> part;
  part.reserve(b.kinds().size());  // bytes that arrived, not the peer's word
  SC_RETURN_IF_ERROR(Decode(b, &part));
  part_of.part_entries += part.size();
  part_of.parts.push_back(std::move(part));
  if (!b.last()) return absl::OkStatus();
  Pending p = std::move(it->second);
  snapshots_.erase(it);
  pending_entries_ -= p.held();
  p.entries = JoinParts(std::move(p.parts), p.part_entries);
  // The head of the last part is the one the whole snapshot must match.
  std::optional<SignedHead> head = HeadFromProto(b.origin());
  if (p.source == InfoSource::kRelay && !HeadIsSigned(origin, head)) {
    return absl::OkStatus();
  }
  absl::Status s = cache_->ReplaceRemote(
      p.info, p.source, p.generation, b.up_to_seq(), b.floor_seq(),
      std::move(p.entries), head ? &*head : nullptr);
  if (s.ok()) {
    learned_ = true;
    ++snapshots_applied_;
  }
  if (s.code() == absl::StatusCode::kResourceExhausted) return s;
  if (s.code() == absl::StatusCode::kPermissionDenied) {
    RefuseRelayed(std::move(s));
  } else if (!s.ok()) {
    SC_LOG(DEBUG) << "from " << sender_.ToString() << ": " << s;
  }
  return absl::OkStatus();
}

absl::Status ExchangeReceiver::FlushDelta(const Uuid& origin) {
  auto it = deltas_.find(origin);
  if (it == deltas_.end()) return absl::OkStatus();
  Pending d = std::move(it->second);
  deltas_.erase(it);
  pending_entries_ -= d.held();
  if (d.source == InfoSource::kRelay) {
    if (!ReachesHead(d)) {  // the answer ended before the head's seq
      SC_LOG(DEBUG) << "relayed deltas of " << origin.ToString() << " from "
                    << sender_.ToString() << " stop before their head";
      return absl::OkStatus();
    }
    if (!HeadIsSigned(origin, d.head)) return absl::OkStatus();
  }
  absl::Status s = cache_->ApplyRemoteDelta(d.info, d.source, d.generation,
                                            d.up_to_seq, std::move(d.entries),
                                            d.head ? &*d.head : nullptr);
  if (s.ok()) {
    learned_ = true;
    ++deltas_applied_;
  }
  if (s.code() == absl::StatusCode::kResourceExhausted) return s;
  if (s.code() == absl::StatusCode::kPermissionDenied) {
    RefuseRelayed(std::move(s));
  } else if (!s.ok()) {
    SC_LOG(DEBUG) << "deltas from " << sender_.ToString() << ": " << s;
  }
  return absl::OkStatus();
}

absl::Status ExchangeReceiver::Finish() {
  std::vector<Uuid> ids;
  for (const auto& [id, d] : deltas_) ids.push_back(id);
  absl::Status first = absl::OkStatus();
  for (const Uuid& id : ids) first.Update(FlushDelta(id));
  snapshots_.clear();
  pending_entries_ = 0;
  return first;
}

}  // namespace sidecar::availability
