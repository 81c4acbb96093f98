#include "services/availability/peer_service.h"

#include <deque>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/ordered_reactor.h"
#include "common/request_limits.h"
#include "common/thread_pool.h"
#include "common/transport.h"
#include "services/availability/local_inventory.h"
#include "services/availability/subscription.h"

namespace sidecar::availability {

// One origin's part of an Exchange answer.
struct Outgoing {
  PeerCache::OriginView view;
  bool snapshot = false;
  // A leaf's subscription: `list` holds the matching entries, for a
  // snapshot too.
  bool filtered = false;
  // A filtered snapshot with more entries than the leaf takes: none go.
  bool over_budget = false;
  uint64_t matching = 0;    // when over_budget
  std::vector<Entry> list;  // deltas (ascending seq), or a filtered snapshot
  // An unfiltered snapshot: the origin's entries as an array (a column of
  // the shared table is read into one when the answer is planned).
  std::shared_ptr<const EntrySet> array;
  absl::Span<const Entry> entries() const {
    if (snapshot && !filtered) return array->entries();
    return list;
  }
};

// The answer to one Exchange, made off gRPC's threads.
struct ExchangePlan {
  std::deque<Outgoing> work;
  v1::Summary summary;
};

namespace {

// Writes an Exchange answer. Planning it (hashing the own state, collecting
// deltas) and encoding each message run as tasks on `encoder`, a pool of
// background priority, which then starts the write: a snapshot of a million
// entries costs a few hundred milliseconds of CPU that gRPC's threads, which
// also answer local requests, must not spend. One task at a time per answer:
// the next message is encoded when the previous one has been sent.
class ExchangeReactor final : public OrderedWriteReactor<v1::ExchangeResponse> {
 public:
  ExchangeReactor(ThreadPool* encoder, std::function<ExchangePlan()> plan,
                  uint32_t max_message_bytes)
      : encoder_(encoder), per_message_(EntriesPerMessage(max_message_bytes)) {
    PublishConstruction();
    encoder_->Schedule([this, plan = std::move(plan)] {
      ExchangePlan p = plan();
      work_ = std::move(p.work);
      summary_ = std::move(p.summary);
      NextOrFinish();
    });
  }

  void OnWriteDone(bool ok) override {
    Reaction r(this);
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "peer went away"));
      return;
    }
    encoder_->Schedule([this] { NextOrFinish(); });
  }

  void OnDone() override {
    ReactionDone(this);
    delete this;
  }

 private:
  // Encodes the next message (CPU only, no waiting) and starts its write.
  // Runs on the encoder pool.
  void NextOrFinish() {
    while (!work_.empty()) {
      Outgoing& o = work_.front();
      absl::Span<const Entry> all = o.entries();
      size_t total = all.size();
      if (pos_ > 0 && pos_ >= total) {
        work_.pop_front();
        pos_ = 0;
        continue;
      }
      size_t n = std::min(per_message_, total - pos_);
      msg_.Clear();
      v1::EntryBatch* b = msg_.mutable_batch();
      OriginInfoToProto(o.view.info, o.view.state.generation,
                        b->mutable_origin());
      if (o.view.head) HeadToProto(*o.view.head, b->mutable_origin());
      if (o.snapshot) {
        b->set_mode(v1::EntryBatch::MODE_SNAPSHOT);
        b->set_first(pos_ == 0);
        if (pos_ == 0) b->set_snapshot_entries(total);
        b->set_last(pos_ + n == total);
        b->set_up_to_seq(o.view.state.max_seq);
        b->set_floor_seq(o.view.state.floor_seq);
        if (o.over_budget) {
          b->set_over_budget(true);
          b->set_snapshot_entries(o.matching);
        }
        EncodeEntries(all.subspan(pos_, n), b);
      } else {
        b->set_mode(v1::EntryBatch::MODE_DELTA);
        bool last = pos_ + n == total;
        b->set_up_to_seq(last ? o.view.state.max_seq : all[pos_ + n - 1].seq());
        EncodeEntries(all.subspan(pos_, n), b);
      }
      pos_ += n;
      if (total == 0) pos_ = 1;  // an empty snapshot is one message
      StartWrite(&msg_);
      return;
    }
    if (!summary_sent_) {
      summary_sent_ = true;
      msg_.Clear();
      *msg_.mutable_summary() = summary_;
      StartWrite(&msg_);
      return;
    }
    Finish(grpc::Status::OK);
  }

  ThreadPool* const encoder_;
  const size_t per_message_;
  // Used by one task or reaction at a time (each starts the next).
  std::deque<Outgoing> work_;
  v1::Summary summary_;
  size_t pos_ = 0;
  bool summary_sent_ = false;
  v1::ExchangeResponse msg_;
};

// The member calling, or why it may not: the listener admitted it by key;
// a Hello, when given, must name that same device.
absl::StatusOr<Uuid> Caller(const grpc::ServerContextBase& ctx,
                            const PeerTrust& trust, const v1::Hello* hello) {
  std::optional<Uuid> who = AuthenticatedDevice(ctx, trust);
  if (!who) {
    return absl::UnauthenticatedError(
        "this device is not paired with the library; pair it first "
        "(sidecarctl pair join)");
  }
  if (hello != nullptr && hello->device_id().empty()) {
    return absl::InvalidArgumentError(
        "from (a Hello with this device's id) is required");
  }
  if (hello != nullptr && hello->device_id() != who->AsBytes()) {
    return absl::PermissionDeniedError(absl::StrCat(
        "Hello.device_id does not match the certificate of the connection "
        "(device ",
        who->ToString(), ")"));
  }
  return *who;
}

// The keys a peer asks about (HasKeys, WhoHas), as cache keys: nullopt for
// a key with a variant never seen here, which nothing can match. Looking
// them up never adds to the variant dictionary. RESOURCE_EXHAUSTED beyond
// kMaxKeysPerRequest, INVALID_ARGUMENT naming the first bad key.
absl::StatusOr<std::vector<std::optional<EntryKey>>> QueriedKeys(
    absl::string_view method,
    const google::protobuf::RepeatedPtrField<v1::SidecarKey>& keys) {
  if (static_cast<size_t>(keys.size()) > kMaxKeysPerRequest) {
    return absl::ResourceExhaustedError(
        absl::StrCat(method, " takes at most ", kMaxKeysPerRequest,
                     " keys; split the request"));
  }
  std::vector<std::optional<EntryKey>> out;
  out.reserve(keys.size());
  for (int i = 0; i < keys.size(); ++i) {
    absl::StatusOr<SidecarKey> key = KeyFromProto(keys[i]);
    if (!key.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("keys[", i, "]: ", key.status().message()));
    }
    out.push_back(FindEntryKey(*key));
  }
  return out;
}

class Reject final : public OrderedWriteReactor<v1::ExchangeResponse> {
 public:
  explicit Reject(grpc::Status s) { Finish(std::move(s)); }
  void OnDone() override {
    ReactionDone(this);
    delete this;
  }
};

}  // namespace

PeerService::PeerService(PeerCache* cache, PeerDirectory* directory,
                         Library* library, Pairing* pairing,
                         ThreadPool* encoder)
    : cache_(cache),
      directory_(directory),
      library_(library),
      pairing_(pairing),
      encoder_(encoder) {}

grpc::Status PeerService::Ping(grpc::ServerContext* ctx,
                               const v1::PingRequest* req,
                               v1::PingResponse* resp) {
  absl::StatusOr<Uuid> caller =
      Caller(*ctx, library_->trust(), req->has_from() ? &req->from() : nullptr);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (req->has_from()) {
    if (absl::Status s = ValidateHello(req->from()); !s.ok())
      return ToGrpcStatus(s);
    directory_->OnInboundHello(req->from(), false);
  }
  *resp->mutable_self() = directory_->SelfHello();
  return grpc::Status::OK;
}

grpc::Status PeerService::SyncMembers(grpc::ServerContext* ctx,
                                      const v1::SyncMembersRequest* req,
                                      v1::SyncMembersResponse* resp) {
  absl::StatusOr<Uuid> caller = Caller(*ctx, library_->trust(), &req->from());
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  if (static_cast<size_t>(req->records_size()) > kMaxMembers) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat("at most ", kMaxMembers, " membership records"));
  }
  std::vector<v1::MemberRecord> records(req->records().begin(),
                                        req->records().end());
  size_t rejected = 0;
  absl::StatusOr<Library::Change> c = library_->Merge(records, &rejected);
  if (!c.ok()) return ToGrpcStatus(c.status());
  if (rejected > 0) {
    SC_LOG(DEBUG) << "member sync from " << caller->ToString() << ": "
                  << rejected << " record(s) not accepted";
  }
  for (v1::MemberRecord& r : library_->Records()) {
    *resp->add_records() = std::move(r);
  }
  return grpc::Status::OK;
}

grpc::Status PeerService::Join(grpc::ServerContext* ctx,
                               const v1::JoinRequest* req,
                               v1::JoinResponse* resp) {
  std::optional<DeviceCertificate> cert = AuthenticatedCertificate(*ctx);
  if (!cert) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "a device certificate is required to pair");
  }
  absl::StatusOr<v1::JoinResponse> r = pairing_->HandleJoin(*cert, *req);
  if (!r.ok()) return ToGrpcStatus(r.status());
  *resp = std::move(*r);
  return grpc::Status::OK;
}

grpc::Status PeerService::HasKeys(grpc::ServerContext* ctx,
                                  const v1::HasKeysRequest* req,
                                  v1::HasKeysResponse* resp) {
  absl::StatusOr<Uuid> caller =
      Caller(*ctx, library_->trust(), req->has_from() ? &req->from() : nullptr);
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::StatusOr<std::vector<std::optional<EntryKey>>> keys =
      QueriedKeys("HasKeys", req->keys());
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  for (const std::optional<EntryKey>& ek : *keys) {
    v1::HasKeysResponse::Entry* out = resp->add_entries();
    if (!ek) continue;
    std::optional<Entry> e = cache_->FindSelf(*ek);
    if (e && !e->removed()) {
      out->set_has(true);
      out->set_size(e->size());
      out->set_sha256(std::string(DigestBytes(e->sha256)));
    }
  }
  return grpc::Status::OK;
}

void PeerService::NoteRefusal(const Uuid& caller, const v1::Refusal& refusal) {
  const absl::StatusCode code = RefusalCode(refusal.code());
  {
    absl::MutexLock lock(&mu_);
    if (!refusals_logged_.insert({caller, static_cast<int>(code)}).second) {
      return;
    }
  }
  std::string name = caller.ToString();
  if (std::optional<MemberView> m = library_->Find(caller)) name = m->name;
  SC_LOG(WARNING) << "peer " << name
                  << " refused this device's Exchange answer: "
                  << absl::StatusCodeToString(code) << ": "
                  << absl::CHexEscape(absl::string_view(refusal.message())
                                          .substr(0, kMaxRefusalMessageBytes));
}

grpc::ServerWriteReactor<v1::ExchangeResponse>* PeerService::Exchange(
    grpc::CallbackServerContext* ctx, const v1::ExchangeRequest* req) {
  absl::StatusOr<Uuid> who = Caller(*ctx, library_->trust(), &req->from());
  if (!who.ok()) return new Reject(ToGrpcStatus(who.status()));
  if (req->has_refusal()) NoteRefusal(*who, req->refusal());
  absl::Status bad = ValidateHello(req->from());
  absl::StatusOr<std::vector<DigestEntry>> digest =
      bad.ok() ? DigestFromProto(req->digest())
               : absl::StatusOr<std::vector<DigestEntry>>(bad);
  if (!digest.ok()) return new Reject(ToGrpcStatus(digest.status()));
  std::optional<Subscription> sub;
  if (req->has_subscription()) {
    absl::StatusOr<Subscription> s =
        Subscription::FromProto(req->subscription());
    if (!s.ok()) return new Reject(ToGrpcStatus(s.status()));
    sub = std::move(*s);
  }
  // What the caller claims to know of non-members does not count.
  std::erase_if(*digest, [&](const DigestEntry& d) {
    return !library_->IsMember(d.origin);
  });
  for (const DigestEntry& d : *digest) {
    if (d.origin == cache_->self_id() && self_view_listener_) {
      self_view_listener_(*who, d);
    }
  }
  return new ExchangeReactor(
      encoder_,
      [this, from = req->from(), digest = std::move(*digest),
       sub = std::move(sub)] {
        return PlanExchange(from, digest, sub ? &*sub : nullptr);
      },
      req->max_message_bytes());
}

namespace {

// What a leaf subscribed to of this device's own entries: the matching
// deltas, or the matching snapshot unless it is larger than the leaf takes.
// No head: the leaf takes it first-hand, and a head describes every entry.
void FilterForLeaf(const Subscription& sub, Outgoing* o) {
  o->view.head.reset();
  o->filtered = true;
  if (!o->snapshot) {
    std::erase_if(o->list, [&](const Entry& e) { return !sub.Matches(e); });
    return;
  }
  const OriginEntries& all = o->view.entries;
  uint64_t matching = 0;
  all.ForEach([&](const Entry& e) { matching += sub.Matches(e); });
  if (matching > sub.max_entries()) {
    o->over_budget = true;
    o->matching = matching;
    return;
  }
  o->list.reserve(matching);
  all.ForEach([&](const Entry& e) {
    if (sub.Matches(e)) o->list.push_back(e);
  });
}

}  // namespace

ExchangePlan PeerService::PlanExchange(const v1::Hello& from,
                                       const std::vector<DigestEntry>& digest,
                                       const Subscription* sub) {
  absl::flat_hash_map<Uuid, const DigestEntry*> theirs;
  for (const DigestEntry& d : digest) theirs[d.origin] = &d;
  std::vector<PeerCache::OriginView> views = cache_->Views();
  // The own state goes with its signed head, of exactly those entries.
  if (std::optional<PeerCache::OriginView> self = cache_->SignedSelfView()) {
    for (PeerCache::OriginView& v : views) {
      if (v.info.device_id == cache_->self_id()) v = std::move(*self);
    }
  }
  absl::flat_hash_set<Uuid> known;
  for (const auto& v : views) known.insert(v.info.device_id);
  Uuid caller = *Uuid::FromBytes(from.device_id());
  // A leaf knows only what it subscribed to of other origins, and this
  // device, if a leaf, only that of them: only the caller's own origin
  // says whether it is ahead.
  const bool own_only = sub != nullptr || leaf_;
  ExchangePlan plan;
  bool caller_ahead = false;
  for (PeerCache::OriginView& v : views) {
    if (!library_->IsMember(v.info.device_id)) continue;
    auto it = theirs.find(v.info.device_id);
    const DigestEntry* remote = it == theirs.end() ? nullptr : it->second;
    if (remote != nullptr && RemoteIsAhead(&v.state, *remote) &&
        (!own_only || v.info.device_id == caller)) {
      caller_ahead = true;
    }
    if (v.info.device_id == caller) continue;  // it knows itself best
    // A leaf is sent this device's own entries only.
    if (sub != nullptr && v.info.device_id != cache_->self_id()) continue;
    // Another origin's state goes on only with that origin's head for it;
    // the caller would refuse it otherwise. The own state goes without one
    // if this device cannot sign.
    if (!v.head && v.info.device_id != cache_->self_id()) continue;
    SendPlan send = PlanSend(v.state, remote);
    if (send == SendPlan::kNothing) continue;
    Outgoing o;
    o.view = std::move(v);
    if (send == SendPlan::kDelta) {
      o.list = OriginTable::Since(o.view.entries, remote->max_seq);
      if (DeltaBetterAsSnapshot(o.list.size(), o.view.entries.size())) {
        o.list.clear();
        send = SendPlan::kSnapshot;
      }
    }
    o.snapshot = send == SendPlan::kSnapshot;
    if (sub != nullptr) FilterForLeaf(*sub, &o);
    if (o.snapshot && !o.filtered) o.array = o.view.entries.Array();
    plan.work.push_back(std::move(o));
  }
  // Origins the caller knows and we do not at all.
  for (const DigestEntry& d : digest) {
    if (d.origin != cache_->self_id() && !known.contains(d.origin) &&
        (!own_only || d.origin == caller) && RemoteIsAhead(nullptr, d)) {
      caller_ahead = true;
    }
  }
  directory_->OnInboundHello(from, caller_ahead);
  SC_LOG(DEBUG) << "exchange from " << from.peer_address() << ": "
                << digest.size() << " origins in digest, sending "
                << plan.work.size()
                << " origins, caller ahead: " << caller_ahead;
  *plan.summary.mutable_self() = directory_->SelfHello();
  std::vector<DigestEntry> mine = cache_->Digest();
  // A leaf offers its own origin only: it relays nothing.
  if (leaf_) {
    std::erase_if(mine, [&](const DigestEntry& d) {
      return d.origin != cache_->self_id();
    });
  }
  DigestToProto(mine, plan.summary.mutable_digest());
  return plan;
}

grpc::Status PeerService::WhoHas(grpc::ServerContext* ctx,
                                 const v1::PeerWhoHasRequest* req,
                                 v1::PeerWhoHasResponse* resp) {
  absl::StatusOr<Uuid> caller = Caller(*ctx, library_->trust(), &req->from());
  if (!caller.ok()) return ToGrpcStatus(caller.status());
  absl::StatusOr<std::vector<std::optional<EntryKey>>> keys =
      QueriedKeys("WhoHas", req->keys());
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  std::vector<PeerCache::OriginView> views = cache_->Views();
  // A leaf's partial mirrors say nothing of what a device lacks: only its
  // own entries count (those of other origins lack a head).
  std::erase_if(views, [&](const PeerCache::OriginView& v) {
    return !library_->IsMember(v.info.device_id) ||
           (leaf_ && v.info.device_id != cache_->self_id());
  });
  PeerCache::Found found;
  PeerCache::Lookup(views, *keys, &found);
  const size_t nv = views.size();
  std::vector<int> device_index(nv, -1);
  resp->mutable_results()->Reserve(req->keys_size());
  for (size_t i = 0; i < keys->size(); ++i) {
    v1::PeerWhoHasResponse::KeyHolders* kh = resp->add_results();
    for (size_t v = 0; v < nv; ++v) {
      const Entry* e = found.At(i, v);
      if (e == nullptr) continue;
      if (device_index[v] < 0) {
        device_index[v] = resp->devices_size();
        resp->add_devices(std::string(views[v].info.device_id.AsBytes()));
      }
      v1::PeerWhoHasResponse::Holder* h = kh->add_holders();
      h->set_device(static_cast<uint32_t>(device_index[v]));
      h->set_size(e->size());
      h->set_sha256(std::string(DigestBytes(e->sha256)));
      h->set_generator_version(std::string(GeneratorVersionOf(*e)));
    }
  }
  return grpc::Status::OK;
}

}  // namespace sidecar::availability
