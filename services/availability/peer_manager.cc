#include "services/availability/peer_manager.h"

#include <algorithm>
#include <optional>

#include "absl/container/flat_hash_set.h"
#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/thread_priority.h"
#include "common/transport.h"
#include "services/availability/availability_metrics.h"
#include "services/availability/exchange_receiver.h"

namespace sidecar::availability {
namespace {

// Least time between two pulls from one peer that the peer itself caused
// (by showing it is ahead): a bound on gossip storms.
constexpr absl::Duration kMinRoundGap = absl::Milliseconds(50);

OriginInfo InfoFromHello(const v1::Hello& h) {
  OriginInfo info;
  info.device_id = Uuid::FromBytes(h.device_id()).value_or(Uuid{});
  info.peer_address = h.peer_address();
  info.transfer_address = h.transfer_address();
  info.name = h.name();
  return info;
}

}  // namespace

// A member this device contacts, and the state of its worker.
//
// Locking: every mutable field is guarded by the manager's mu_, which the
// peer names `mu` so that clang's analysis can check the fields (it cannot
// name the enclosing object's member from here). The analysis does not know
// that p->mu and mu_ are one mutex: code holding mu_ says so with
// p->mu.AssertHeld() (checked at run time too) before it touches p.
struct PeerManager::Peer {
  Peer(absl::Mutex& manager_mu, const Uuid& id)
      : mu(manager_mu), device_id(id) {}

  absl::Mutex& mu;       // PeerManager::mu_
  const Uuid device_id;  // peers are members; never changes
  std::string address ABSL_GUARDED_BY(mu);
  bool configured ABSL_GUARDED_BY(mu) = false;  // paired directly
  // Replaced when the member's address changes; calls copy it first.
  std::shared_ptr<v1::Peer::Stub> stub ABSL_GUARDED_BY(mu);
  std::string cert_der ABSL_GUARDED_BY(mu);  // the pinned certificate
  std::string name ABSL_GUARDED_BY(mu);
  std::string transfer_address ABSL_GUARDED_BY(mu);
  bool online ABSL_GUARDED_BY(mu) = false;
  // No longer contacted (removed, or not direct); its worker ends.
  bool retired ABSL_GUARDED_BY(mu) = false;
  // A pull failed; pull again at next contact.
  bool need_round ABSL_GUARDED_BY(mu) = false;
  // Its members digest differs from ours.
  bool need_member_sync ABSL_GUARDED_BY(mu) = false;
  absl::Time last_contact ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  absl::Duration rtt ABSL_GUARDED_BY(mu) = absl::ZeroDuration();
  std::string last_error ABSL_GUARDED_BY(mu);
  absl::Time next_ping ABSL_GUARDED_BY(mu);
  absl::Time next_round ABSL_GUARDED_BY(mu);
  absl::Time prompt_at ABSL_GUARDED_BY(mu) = absl::InfiniteFuture();
  absl::Time last_round ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  // Its Hello says it is a leaf.
  bool is_leaf ABSL_GUARDED_BY(mu) = false;
  // This device, a leaf, does not mirror p until then (p has more entries
  // than the budget), and mirrors it in that mode now.
  absl::Time over_budget_until ABSL_GUARDED_BY(mu) = absl::InfinitePast();
  bool mirroring ABSL_GUARDED_BY(mu) = true;
  // Origins its last Exchange summary listed: how much of the library it
  // knows, for choosing a delegate.
  size_t origins_known ABSL_GUARDED_BY(mu) = 0;
  // Kinds of refusal already logged for this peer (logged once each).
  absl::flat_hash_set<absl::StatusCode> refusals_logged ABSL_GUARDED_BY(mu);
  // Why its last answer was refused, to tell it with the next request.
  std::optional<v1::Refusal> refusal_to_tell ABSL_GUARDED_BY(mu);
  // The call in flight, for Stop() to cancel.
  grpc::ClientContext* active ABSL_GUARDED_BY(mu) = nullptr;
  std::thread thread ABSL_GUARDED_BY(mu);
  absl::CondVar cv;  // waits on mu
};

PeerManager::PeerManager(PeerManagerOptions options, PeerCache* cache,
                         WatchHub* hub, v1::Hello self, Library* library,
                         const DeviceKey* key)
    : options_(std::move(options)),
      cache_(cache),
      hub_(hub),
      library_(library),
      key_(key) {
  absl::MutexLock lock(&mu_);
  self_ = std::move(self);
}

PeerManager::~PeerManager() { Stop(); }

PeerManager::Peer* PeerManager::FindByDeviceLocked(const Uuid& id) {
  for (auto& p : peers_) {
    p->mu.AssertHeld();
    if (!p->retired && p->device_id == id) return p.get();
  }
  return nullptr;
}

PeerManager::Peer* PeerManager::AddPeerLocked(const MemberView& member,
                                              bool direct) {
  if (stopping_) return nullptr;
  size_t live = 0;
  for (auto& p : peers_) {
    p->mu.AssertHeld();
    live += !p->retired;
  }
  if (live >= options_.max_peers) {
    SC_LOG(WARNING) << "not adding peer " << member.peer_address << ": already "
                    << live << " peers (max_peers)";
    return nullptr;
  }
  auto p = std::make_unique<Peer>(mu_, member.cert.device_id);
  p->mu.AssertHeld();
  p->address = member.peer_address;
  p->configured = direct;
  p->name = member.name;
  p->transfer_address = member.transfer_address;
  p->cert_der = member.cert.der;
  p->stub = v1::Peer::NewStub(
      MakePeerChannel(member.peer_address, *key_, member.cert));
  absl::Time now = absl::Now();
  p->next_ping = now;
  p->next_round = now;  // pull at once: catch up after our own restart
  Peer* raw = p.get();
  peers_.push_back(std::move(p));
  raw->mu.AssertHeld();
  if (started_) raw->thread = std::thread([this, raw] { Run(raw); });
  SC_LOG(INFO) << "peer " << member.name << " ("
               << member.cert.device_id.ToString() << ") at "
               << member.peer_address;
  return raw;
}

void PeerManager::SyncPeers() {
  std::vector<MemberView> members = library_->List(false);
  const Uuid& self = library_->self_id();
  std::optional<MemberView> me = library_->Find(self);
  std::vector<std::thread> finished;
  absl::MutexLock lock(&mu_);
  if (stopping_) return;
  absl::flat_hash_set<Uuid> wanted;
  for (const MemberView& m : members) {
    const Uuid& id = m.cert.device_id;
    if (id == self || m.peer_address.empty()) continue;
    bool direct = m.admitted_by == self || (me && me->admitted_by == id);
    if (!direct && !options_.contact_learned_peers) continue;
    wanted.insert(id);
    Peer* p = FindByDeviceLocked(id);
    if (p == nullptr) {
      AddPeerLocked(m, direct);
      continue;
    }
    p->mu.AssertHeld();
    p->configured = direct;
    p->name = m.name;
    if (p->address != m.peer_address || p->cert_der != m.cert.der) {
      SC_LOG(INFO) << "peer " << m.name << " moved to " << m.peer_address;
      p->address = m.peer_address;
      p->cert_der = m.cert.der;
      p->stub =
          v1::Peer::NewStub(MakePeerChannel(m.peer_address, *key_, m.cert));
      p->next_ping = std::min(p->next_ping, absl::Now());
      p->cv.Signal();
    }
  }
  for (auto& p : peers_) {
    p->mu.AssertHeld();
    if (!p->retired && !wanted.contains(p->device_id)) {
      SC_LOG(INFO) << "peer " << p->name << " is no longer contacted";
      p->retired = true;
      if (p->active != nullptr) p->active->TryCancel();
      p->cv.Signal();
    }
  }
}

void PeerManager::OnLibraryChange(const Library::Change& change) {
  for (const Uuid& id : change.removed) {
    cache_->DropOrigin(id);
    if (hub_) {
      v1::AvailabilityEvent ev;
      ev.set_type(v1::AvailabilityEvent::TYPE_OFFLINE);
      ev.set_device_id(id.ToString());
      hub_->Publish(ev);
    }
  }
  SyncPeers();
  // Tell the others at once rather than at their next ping.
  if (change.any()) {
    absl::MutexLock lock(&mu_);
    for (auto& p : peers_) {
      p->mu.AssertHeld();
      if (p->retired) continue;
      p->need_member_sync = true;
      p->next_ping = std::min(p->next_ping, absl::Now());
      p->cv.Signal();
    }
  }
}

void PeerManager::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (started_) return;
    started_ = true;
    for (auto& p : peers_) {
      Peer* raw = p.get();
      raw->mu.AssertHeld();
      raw->thread = std::thread([this, raw] { Run(raw); });
    }
  }
  SyncPeers();
}

void PeerManager::Stop() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (auto& p : peers_) {
      p->mu.AssertHeld();
      if (p->active != nullptr) p->active->TryCancel();
      p->cv.SignalAll();
      if (p->thread.joinable()) threads.push_back(std::move(p->thread));
    }
  }
  for (std::thread& t : threads) t.join();
}

absl::Duration PeerManager::NextRoundDelay() {
  thread_local absl::BitGen gen;
  double j = options_.gossip_jitter;
  double f = j > 0 ? absl::Uniform(gen, 1.0 - j, 1.0 + j) : 1.0;
  return options_.gossip_interval * f;
}

void PeerManager::Run(Peer* p) {
  // Gossip is background work: decoding and applying a snapshot of a million
  // entries must not take the CPU from threads answering local requests.
  // Pings run here too, so a busy CPU inflates RTTs of every peer alike.
  if (absl::Status s = LowerThisThreadPriority(kBackgroundNice); !s.ok()) {
    SC_LOG(DEBUG) << "gossip with " << p->device_id.ToString() << ": " << s;
  }
  for (;;) {
    bool round;
    {
      absl::MutexLock lock(&mu_);
      if (!AwaitContactLocked(p, &round)) return;
    }
    v1::Hello hello;
    absl::Duration rtt = absl::ZeroDuration();
    absl::Status s = round ? DoExchange(p, &hello) : DoPing(p, &hello, &rtt);
    bool sync_members;
    {
      absl::MutexLock lock(&mu_);
      sync_members = RecordContactLocked(p, round, s, hello, rtt);
    }
    if (!sync_members) continue;
    absl::Status ms = DoSyncMembers(p);
    if (!ms.ok()) {
      absl::MutexLock lock(&mu_);
      p->mu.AssertHeld();
      p->need_member_sync = true;  // at the next contact
      SC_LOG(DEBUG) << "member sync with " << p->address << ": " << ms;
    }
  }
}

bool PeerManager::AwaitContactLocked(Peer* p, bool* round) {
  p->mu.AssertHeld();
  while (!stopping_ && !p->retired) {
    absl::Time now = absl::Now();
    absl::Time due = std::min({p->next_ping, p->next_round, p->prompt_at});
    if (now < due) {
      p->cv.WaitWithDeadline(&mu_, due);
      continue;
    }
    *round = now >= p->next_round || now >= p->prompt_at;
    if (*round) {
      p->last_round = now;
      p->prompt_at = absl::InfiniteFuture();
      p->next_round = now + NextRoundDelay();
    } else {
      // Rounds do not push pings back: pings keep measuring round-trip.
      p->next_ping = now + PingInterval(p);
    }
    return true;
  }
  return false;
}

bool PeerManager::RecordContactLocked(Peer* p, bool round,
                                      const absl::Status& s,
                                      const v1::Hello& hello,
                                      absl::Duration rtt) {
  p->mu.AssertHeld();
  if (round) p->need_round = !s.ok();
  RecordResult(p, s, hello, rtt);
  if (!p->need_member_sync || !s.ok() || stopping_ || p->retired) return false;
  p->need_member_sync = false;
  return true;
}

absl::StatusOr<PeerManager::CallTarget> PeerManager::BeginCall(
    Peer* p, grpc::ClientContext* ctx) {
  absl::MutexLock lock(&mu_);
  p->mu.AssertHeld();
  if (stopping_) return absl::CancelledError("stopping");
  p->active = ctx;
  return CallTarget{p->stub, p->address};
}

void PeerManager::EndCall(Peer* p) {
  absl::MutexLock lock(&mu_);
  p->mu.AssertHeld();
  p->active = nullptr;
}

absl::Status PeerManager::DoSyncMembers(Peer* p) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout);
  absl::StatusOr<CallTarget> target = BeginCall(p, &ctx);
  if (!target.ok()) return target.status();
  v1::SyncMembersRequest req;
  *req.mutable_from() = SelfHello();
  for (v1::MemberRecord& r : library_->Records()) {
    *req.add_records() = std::move(r);
  }
  v1::SyncMembersResponse resp;
  grpc::Status s = target->stub->SyncMembers(&ctx, req, &resp);
  EndCall(p);
  if (!s.ok()) return FromGrpcStatus(s);
  std::vector<v1::MemberRecord> records(resp.records().begin(),
                                        resp.records().end());
  size_t rejected = 0;
  absl::StatusOr<Library::Change> c = library_->Merge(records, &rejected);
  if (!c.ok()) return c.status();
  if (rejected > 0) {
    SC_LOG(DEBUG) << "member sync with " << target->address << ": " << rejected
                  << " record(s) not accepted";
  }
  return absl::OkStatus();
}

absl::Status PeerManager::DoPing(Peer* p, v1::Hello* their_hello,
                                 absl::Duration* rtt) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout);
  absl::StatusOr<CallTarget> target = BeginCall(p, &ctx);
  if (!target.ok()) return target.status();
  v1::PingRequest req;
  *req.mutable_from() = SelfHello();
  v1::PingResponse resp;
  absl::Time start = absl::Now();
  grpc::Status s = target->stub->Ping(&ctx, req, &resp);
  *rtt = absl::Now() - start;
  EndCall(p);
  if (!s.ok()) return FromGrpcStatus(s);
  *their_hello = resp.self();
  return absl::OkStatus();
}

absl::Status PeerManager::DoExchange(Peer* p, v1::Hello* their_hello) {
  const absl::Time start = absl::Now();
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.exchange_timeout);
  absl::StatusOr<CallTarget> target = BeginCall(p, &ctx);
  if (!target.ok()) return target.status();
  v1::ExchangeRequest req;
  *req.mutable_from() = SelfHello();
  if (options_.leaf) *req.mutable_subscription() = LeafSubscription(p);
  DigestToProto(cache_->Digest(), req.mutable_digest());
  req.set_max_message_bytes(options_.max_message_bytes);
  {
    absl::MutexLock lock(&mu_);
    p->mu.AssertHeld();
    if (p->refusal_to_tell) {
      *req.mutable_refusal() = std::move(*p->refusal_to_tell);
      p->refusal_to_tell.reset();
    }
  }
  std::unique_ptr<grpc::ClientReader<v1::ExchangeResponse>> reader =
      target->stub->Exchange(&ctx, req);

  ReceiveLimits limits;
  // A leaf holds no more before applying than it may keep.
  if (options_.leaf) {
    limits.max_pending_entries =
        std::min(limits.max_pending_entries, options_.leaf_cache_entries + 1);
  }
  ExchangeReceiver receiver(cache_, library_, p->device_id, limits);
  absl::Status failure = absl::OkStatus();
  v1::ExchangeResponse msg;
  uint64_t received_bytes = 0;
  while (failure.ok() && reader->Read(&msg)) {
    if (metrics_ != nullptr) received_bytes += msg.ByteSizeLong();
    failure = receiver.OnMessage(msg);
  }
  // What arrived completely is a consistent prefix: keep it. Partial
  // snapshots are dropped.
  failure.Update(receiver.Finish());
  if (receiver.summary_hello()) {
    *their_hello = *receiver.summary_hello();
    absl::MutexLock lock(&mu_);
    p->mu.AssertHeld();
    p->origins_known =
        std::min<size_t>(receiver.summary_digest().size(), kMaxDigestOrigins);
  }
  if (self_view_listener_) {
    absl::StatusOr<std::vector<DigestEntry>> theirs =
        DigestFromProto(receiver.summary_digest());
    if (theirs.ok()) {
      for (const DigestEntry& d : *theirs) {
        if (d.origin == cache_->self_id()) {
          self_view_listener_(p->device_id, d);
        }
      }
    }
  }
  if (!failure.ok()) ctx.TryCancel();
  grpc::Status s = reader->Finish();
  if (metrics_ != nullptr) {
    metrics_->RoundEnded(p->device_id,
                         {.duration = absl::Now() - start,
                          .bytes = received_bytes,
                          .snapshots = receiver.snapshots_applied(),
                          .deltas = receiver.deltas_applied()},
                         failure, FromGrpcStatus(s));
  }
  SC_LOG(DEBUG) << "exchange with " << target->address << ": " << s.error_code()
                << " " << s.error_message();
  EndCall(p);
  if (options_.leaf) {
    std::optional<uint64_t> over = receiver.over_budget();
    // Deltas that would pass the bound count as the peer being too big.
    if (!over && failure.code() == absl::StatusCode::kResourceExhausted) {
      over = options_.leaf_cache_entries + 1;
    }
    CheckLeafBudget(p, over);
  } else if (receiver.learned()) {
    // Gossip on: our digest is now ahead of our other peers', and a prompt
    // round lets them see it and pull (A -> B -> C without A and C
    // talking). A leaf relays nothing.
    RequestPromptRound();
  }
  if (receiver.relayed_states_refused() > 0) {
    bool first;
    {
      absl::MutexLock lock(&mu_);
      p->mu.AssertHeld();
      first =
          p->refusals_logged.insert(absl::StatusCode::kPermissionDenied).second;
    }
    if (first) {
      SC_LOG(WARNING) << "peer " << target->address << " relayed "
                      << receiver.relayed_states_refused()
                      << " device state(s) that their devices did not sign; "
                         "skipped (logged once per peer): "
                      << receiver.first_relayed_refusal().message();
    }
  }
  if (!failure.ok()) {
    // Once per peer and kind of refusal: a peer that keeps sending too much
    // must not fill the log.
    bool first;
    {
      absl::MutexLock lock(&mu_);
      p->mu.AssertHeld();
      first = p->refusals_logged.insert(failure.code()).second;
      // The peer saw only a cancelled stream: say why next time.
      v1::Refusal r;
      r.set_code(static_cast<int>(failure.code()));
      r.set_message(
          std::string(failure.message().substr(0, kMaxRefusalMessageBytes)));
      p->refusal_to_tell = std::move(r);
    }
    if (first) {
      SC_LOG(WARNING) << "exchange with " << target->address
                      << " stopped: it sent "
                      << (failure.code() == absl::StatusCode::kResourceExhausted
                              ? "more than this device accepts: "
                              : "bad data: ")
                      << failure.message();
    }
    return failure;
  }
  return FromGrpcStatus(s);
}

absl::Duration PeerManager::PingInterval(const Peer* p) const {
  p->mu.AssertHeld();
  if (!p->is_leaf) return options_.ping_interval;
  return std::max(options_.ping_interval, options_.leaf_ping_interval);
}

absl::Duration PeerManager::OfflineAfter(const Peer* p) const {
  p->mu.AssertHeld();
  if (!p->is_leaf) return options_.offline_after;
  return std::max(options_.offline_after, PingInterval(p) * 2.5);
}

v1::Subscription PeerManager::LeafSubscription(Peer* p) {
  bool mirror;
  bool switched;
  {
    absl::MutexLock lock(&mu_);
    p->mu.AssertHeld();
    mirror = absl::Now() >= p->over_budget_until;
    switched = mirror != p->mirroring;
    p->mirroring = mirror;
  }
  // What is held of p was sent for the other mode: start afresh.
  if (switched) cache_->DropOrigin(p->device_id);
  if (!mirror) return SubscriptionToProto(SubscriptionSpec{}, 0);
  const uint64_t others = cache_->RemoteEntries(p->device_id);
  uint64_t room = options_.leaf_cache_entries > others
                      ? options_.leaf_cache_entries - others
                      : 0;
  return SubscriptionToProto(options_.subscription, room);
}

void PeerManager::CheckLeafBudget(Peer* p,
                                  const std::optional<uint64_t>& over_budget) {
  std::optional<PeerCache::OriginView> view = cache_->View(p->device_id);
  uint64_t held = view ? view->entries.size() : 0;
  const uint64_t total = cache_->RemoteEntries();
  if (!over_budget && total <= options_.leaf_cache_entries) return;
  uint64_t count = over_budget.value_or(held);
  {
    absl::MutexLock lock(&mu_);
    p->mu.AssertHeld();
    p->over_budget_until = absl::Now() + options_.over_budget_retry;
    SC_LOG(INFO) << "peer " << p->name << " has " << count
                 << " subscribed entries, more than this leaf keeps ("
                 << options_.leaf_cache_entries
                 << " in all); its sidecars are found by delegation";
  }
  if (held > 0) cache_->DropOrigin(p->device_id);
}

std::vector<PeerManager::Delegate> PeerManager::DelegateCandidates(
    const std::optional<Uuid>& preferred) const {
  struct Ranked {
    bool preferred;
    size_t origins;
    absl::Duration rtt;
    Delegate delegate;
  };
  std::vector<Ranked> found;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& p : peers_) {
      p->mu.AssertHeld();
      if (p->retired || !p->online || p->is_leaf) continue;
      found.push_back({preferred && *preferred == p->device_id,
                       p->origins_known, p->rtt,
                       Delegate{p->device_id, p->stub}});
    }
  }
  // The one named first, then those that know more of the library (an
  // always-on home server knows every device), then the nearest.
  std::stable_sort(found.begin(), found.end(),
                   [](const Ranked& a, const Ranked& b) {
                     if (a.preferred != b.preferred) return a.preferred;
                     if (a.origins != b.origins) return a.origins > b.origins;
                     return a.rtt < b.rtt;
                   });
  std::vector<Delegate> out;
  for (Ranked& r : found) out.push_back(std::move(r.delegate));
  return out;
}

void PeerManager::RecordResult(Peer* p, const absl::Status& s,
                               const v1::Hello& hello, absl::Duration rtt) {
  p->mu.AssertHeld();
  absl::Time now = absl::Now();
  if (!s.ok()) {
    if (s.code() == absl::StatusCode::kCancelled && stopping_) return;
    p->last_error = std::string(s.message());
    if (p->online && now - p->last_contact >= OfflineAfter(p)) {
      p->online = false;
      SC_LOG(INFO) << "peer " << p->address << " is offline: " << s.message();
      if (hub_) {
        v1::AvailabilityEvent ev;
        ev.set_type(v1::AvailabilityEvent::TYPE_OFFLINE);
        ev.set_device_id(p->device_id.ToString());
        hub_->Publish(ev);
      }
    }
    return;
  }
  if (ValidateHello(hello).ok()) {
    Uuid id = *Uuid::FromBytes(hello.device_id());
    if (id != p->device_id) {
      // TLS pinned the member's key, so this is a confused or hostile
      // member: believe nothing it says about itself.
      p->last_error = absl::StrCat("answered as device ", id.ToString());
      SC_LOG(WARNING) << "peer " << p->address << " " << p->last_error;
      return;
    }
    p->name = hello.name();
    p->transfer_address = hello.transfer_address();
    p->is_leaf = hello.leaf();
    cache_->NoteOrigin(InfoFromHello(hello));
    if (hello.members_digest() != library_->Digest()) {
      p->need_member_sync = true;
    }
  }
  p->last_contact = now;
  p->last_error.clear();
  if (rtt > absl::ZeroDuration()) {
    p->rtt = p->rtt == absl::ZeroDuration() ? rtt : p->rtt * 0.7 + rtt * 0.3;
  }
  if (!p->online) {
    p->online = true;
    SC_LOG(INFO) << "peer " << p->address << " is online";
    p->prompt_at = std::min(p->prompt_at, now);  // catch up now
    if (hub_) {
      v1::AvailabilityEvent ev;
      ev.set_type(v1::AvailabilityEvent::TYPE_ONLINE);
      ev.set_device_id(p->device_id.ToString());
      hub_->Publish(ev);
    }
  }
  if (p->need_round) p->prompt_at = std::min(p->prompt_at, now);
}

v1::Hello PeerManager::SelfHello() const {
  v1::Hello h;
  {
    absl::MutexLock lock(&mu_);
    h = self_;
  }
  if (library_ != nullptr) h.set_members_digest(library_->Digest());
  return h;
}

void PeerManager::SetSelfPeerAddress(const std::string& address) {
  absl::MutexLock lock(&mu_);
  self_.set_peer_address(address);
}

void PeerManager::SetSelfGeneration(uint64_t generation) {
  absl::MutexLock lock(&mu_);
  self_.set_generation(generation);
}

void PeerManager::SetSelfTransferAddress(const std::string& address) {
  absl::MutexLock lock(&mu_);
  self_.set_transfer_address(address);
}

void PeerManager::OnInboundHello(const v1::Hello& hello, bool caller_is_ahead) {
  // The caller's device id was checked against its certificate (PeerService).
  OriginInfo info = InfoFromHello(hello);
  if (info.device_id.IsNil() || info.device_id == cache_->self_id()) return;
  if (!library_->IsMember(info.device_id)) return;
  cache_->NoteOrigin(info);
  // A member tells where it is now (it restarted elsewhere, say); the
  // library's listener (OnLibraryChange) then moves its channel.
  library_->NoteAddresses(info.device_id, hello.peer_address(),
                          hello.transfer_address());
  const bool members_differ = hello.members_digest() != library_->Digest();
  absl::MutexLock lock(&mu_);
  Peer* p = FindByDeviceLocked(info.device_id);
  if (p == nullptr) return;
  p->mu.AssertHeld();
  if (members_differ && !p->need_member_sync) {
    p->need_member_sync = true;
    p->next_ping = std::min(p->next_ping, absl::Now());
    p->cv.Signal();
  }
  if (caller_is_ahead) {
    // Pull soon, but never in a tight loop with one peer.
    absl::Time at = std::max(absl::Now(), p->last_round + kMinRoundGap);
    if (at < p->prompt_at) {
      p->prompt_at = at;
      p->cv.Signal();
    }
  }
}

void PeerManager::RequestPromptRound() {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  for (auto& p : peers_) {
    p->mu.AssertHeld();
    if (p->retired) continue;
    const absl::Time due =
        now + (p->is_leaf
                   ? std::max(options_.prompt_delay, options_.leaf_prompt_delay)
                   : options_.prompt_delay);
    if (p->prompt_at > due) {
      p->prompt_at = due;
      p->cv.Signal();
    }
  }
}

std::vector<PeerStatus> PeerManager::List() const {
  absl::MutexLock lock(&mu_);
  std::vector<PeerStatus> out;
  for (const auto& p : peers_) {
    p->mu.AssertHeld();
    if (p->retired) continue;
    PeerStatus s;
    s.address = p->address;
    s.device_id = p->device_id;
    s.name = p->name;
    s.transfer_address = p->transfer_address;
    s.configured = p->configured;
    s.online = p->online;
    s.last_contact = p->last_contact;
    s.rtt = p->rtt;
    s.last_error = p->last_error;
    s.leaf = p->is_leaf;
    s.not_mirrored = options_.leaf && absl::Now() < p->over_budget_until;
    auto it = transfer_stats_.find(p->device_id);
    if (it != transfer_stats_.end()) s.throughput = it->second.throughput;
    out.push_back(std::move(s));
  }
  return out;
}

absl::flat_hash_map<Uuid, DeviceStats> PeerManager::Stats() const {
  absl::MutexLock lock(&mu_);
  absl::flat_hash_map<Uuid, DeviceStats> out;
  for (const auto& p : peers_) {
    p->mu.AssertHeld();
    if (p->retired) continue;
    DeviceStats& d = out[p->device_id];
    // A device reachable at any of its addresses is online.
    d.online = d.online || p->online;
    d.last_contact = std::max(d.last_contact, p->last_contact);
    if (p->online && (d.rtt == absl::ZeroDuration() || p->rtt < d.rtt)) {
      d.rtt = p->rtt;
    }
  }
  absl::Time now = absl::Now();
  for (const auto& [id, t] : transfer_stats_) {
    auto it = out.find(id);
    if (it != out.end()) it->second.throughput = t.throughput;
  }
  for (const auto& [id, until] : demoted_until_) {
    auto it = out.find(id);
    if (it != out.end() && until > now) it->second.demoted = true;
  }
  return out;
}

void PeerManager::ReportTransfer(const Uuid& device, uint64_t bytes,
                                 absl::Duration duration, bool ok,
                                 bool corrupt) {
  absl::MutexLock lock(&mu_);
  if (corrupt) {
    demoted_until_[device] = absl::Now() + absl::Minutes(10);
  }
  if (!ok || duration <= absl::ZeroDuration() || bytes == 0) return;
  double sample = static_cast<double>(bytes) / absl::ToDoubleSeconds(duration);
  DeviceStats& s = transfer_stats_[device];
  s.throughput = s.throughput == 0 ? sample : 0.7 * s.throughput + 0.3 * sample;
}

void PeerManager::QueryPeers(const std::vector<SidecarKey>& keys,
                             std::vector<std::vector<DirectAnswer>>* answers) {
  answers->assign(keys.size(), {});
  struct Target {
    std::shared_ptr<v1::Peer::Stub> stub;
    Uuid device;
  };
  std::vector<Target> targets;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& p : peers_) {
      p->mu.AssertHeld();
      if (!p->retired && p->online) {
        targets.push_back({p->stub, p->device_id});
      }
    }
  }
  v1::HasKeysRequest req;
  *req.mutable_from() = SelfHello();
  for (const SidecarKey& k : keys) KeyToProto(k, req.add_keys());
  std::vector<v1::HasKeysResponse> responses(targets.size());
  std::vector<grpc::Status> statuses(targets.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < targets.size(); ++i) {
    threads.emplace_back([&, i] {
      grpc::ClientContext ctx;
      SetDeadline(&ctx, options_.rpc_timeout);
      statuses[i] = targets[i].stub->HasKeys(&ctx, req, &responses[i]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < targets.size(); ++i) {
    if (!statuses[i].ok() ||
        responses[i].entries_size() != static_cast<int>(keys.size())) {
      continue;
    }
    for (size_t k = 0; k < keys.size(); ++k) {
      const auto& e = responses[i].entries(k);
      if (!e.has()) continue;
      absl::StatusOr<Sha256Digest> sha = DigestFromBytes(e.sha256());
      if (!sha.ok()) continue;
      (*answers)[k].push_back({targets[i].device, e.size(), *sha});
    }
  }
}

}  // namespace sidecar::availability
