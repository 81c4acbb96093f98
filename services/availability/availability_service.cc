#include "services/availability/availability_service.h"

#include <sys/stat.h>

#include <algorithm>
#include <deque>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/request_limits.h"
#include "common/transport.h"
#include "google/protobuf/util/time_util.h"
#include "services/availability/generator_version.h"
#include "services/availability/ranking.h"

namespace sidecar::availability {
namespace {

using google::protobuf::util::TimeUtil;

grpc::Status Invalid(std::string msg) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(msg));
}

// Most entries one page of ListLocal or ListMissing may ask for.
constexpr size_t kMaxPageSize = 10000;

grpc::Status TooMany(absl::string_view what, size_t n) {
  return grpc::Status(
      grpc::StatusCode::RESOURCE_EXHAUSTED,
      absl::StrCat(n, " ", what, " in one call; at most ", kMaxKeysPerRequest,
                   " are accepted: split the request into batches"));
}

void SetTime(absl::Time t, google::protobuf::Timestamp* out) {
  if (t == absl::InfinitePast() || t == absl::UnixEpoch()) return;
  *out = TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(t));
}

// Keys of a request, validated and checked for duplicates.
absl::StatusOr<std::vector<SidecarKey>> ParseKeys(
    const google::protobuf::RepeatedPtrField<v1::SidecarKey>& keys,
    bool reject_duplicates) {
  std::vector<SidecarKey> out;
  out.reserve(keys.size());
  absl::flat_hash_set<SidecarKey> seen;
  for (int i = 0; i < keys.size(); ++i) {
    absl::StatusOr<SidecarKey> k = KeyFromProto(keys[i]);
    if (!k.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("keys[", i, "]: ", k.status().message()));
    }
    if (reject_duplicates && !seen.insert(*k).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "keys[", i, "]: ", KeyDebugString(*k), " appears twice"));
    }
    out.push_back(std::move(*k));
  }
  return out;
}

std::string PageToken(const SidecarKey& k) { return FormatSidecarUri(k); }

void RecordToProto(const LocalRecord& r, v1::LocalSidecar* s) {
  KeyToProto(r.key, s->mutable_key());
  s->set_size(r.size);
  if (r.sha256) s->set_sha256(std::string(DigestBytes(*r.sha256)));
  s->set_status(r.status);
  s->set_generator_version(r.generator_version);
  s->set_relative_path(RelativePath(r.key));
  SetTime(r.created_at, s->mutable_created_at());
  SetTime(r.updated_at, s->mutable_updated_at());
  s->set_fetched(r.fetched);
  SetTime(r.last_used, s->mutable_last_used());
}

}  // namespace

AvailabilityService::AvailabilityService(Deps deps) : d_(std::move(deps)) {}

bool AvailabilityService::LocalFilePresent(const SidecarKey& key, uint64_t size,
                                           std::string* path) const {
  *path = absl::StrCat(d_.sidecar_root, "/", RelativePath(key));
  struct stat st;
  if (::stat(path->c_str(), &st) != 0) return false;
  return S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) == size;
}

grpc::Status AvailabilityService::GetDevice(grpc::ServerContext*,
                                            const v1::GetDeviceRequest*,
                                            v1::DeviceInfo* resp) {
  v1::Hello self = d_.peers->SelfHello();
  const DeviceIdentity id = d_.store->identity();  // one snapshot
  resp->set_device_id(id.device_id.ToString());
  resp->set_generation(id.generation);
  resp->set_max_seq(d_.inventory->max_seq());
  resp->set_name(self.name());
  resp->set_peer_address(self.peer_address());
  resp->set_transfer_address(self.transfer_address());
  if (auto v = d_.cache->View(d_.cache->self_id())) {
    resp->set_local_ready(v->live_count);
  }
  resp->set_profile(self.leaf() ? "leaf" : "full");
  resp->set_mirrored_entries(d_.cache->RemoteEntries());
  resp->set_mirror_budget_entries(d_.mirror_budget_entries);
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::Register(grpc::ServerContext* ctx,
                                           const v1::RegisterRequest* req,
                                           v1::RegisterResponse* resp) {
  ScopedLogFields log_fields({{"request_id", RequestId(*ctx)}});
  if (static_cast<size_t>(req->sidecars_size()) > kMaxKeysPerRequest) {
    return TooMany("sidecars", req->sidecars_size());
  }
  std::vector<LocalRecord> records;
  records.reserve(req->sidecars_size());
  absl::flat_hash_set<SidecarKey> seen;
  for (int i = 0; i < req->sidecars_size(); ++i) {
    const v1::LocalSidecar& s = req->sidecars(i);
    absl::StatusOr<SidecarKey> key = KeyFromProto(s.key());
    if (!key.ok()) {
      return Invalid(
          absl::StrCat("sidecars[", i, "].key: ", key.status().message()));
    }
    if (!seen.insert(*key).second) {
      return Invalid(absl::StrCat("sidecars[", i, "]: ", KeyDebugString(*key),
                                  " appears twice in the batch"));
    }
    LocalRecord r;
    r.key = std::move(*key);
    r.size = s.size();
    r.status = s.status();
    r.generator_version = s.generator_version();
    r.fetched = s.fetched();
    if (!s.sha256().empty()) {
      absl::StatusOr<Sha256Digest> d = DigestFromBytes(s.sha256());
      if (!d.ok()) {
        return Invalid(
            absl::StrCat("sidecars[", i, "].sha256: ", d.status().message()));
      }
      r.sha256 = *d;
    }
    if (absl::Status st = LocalInventory::ValidateRecord(r); !st.ok()) {
      return Invalid(absl::StrCat("sidecars[", i, "]: ", st.message()));
    }
    records.push_back(std::move(r));
  }
  absl::StatusOr<LocalInventory::RegisterResult> r =
      d_.inventory->Register(std::move(records));
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_registered(r->registered);
  resp->set_advertised_changes(r->changes);
  resp->set_max_seq(r->max_seq);
  SC_LOG(DEBUG) << "registered " << r->registered << " of "
                << req->sidecars_size() << " sidecars, " << r->changes
                << " changes advertised (up to seq " << r->max_seq << ")";
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::Remove(grpc::ServerContext*,
                                         const v1::RemoveRequest* req,
                                         v1::RemoveResponse* resp) {
  if (static_cast<size_t>(req->keys_size()) > kMaxKeysPerRequest) {
    return TooMany("keys", req->keys_size());
  }
  absl::StatusOr<std::vector<SidecarKey>> keys =
      ParseKeys(req->keys(), /*reject_duplicates=*/true);
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  absl::StatusOr<LocalInventory::RemoveResult> r =
      d_.inventory->Remove(std::move(*keys));
  if (!r.ok()) return ToGrpcStatus(r.status());
  resp->set_removed(r->removed);
  resp->set_not_found(r->not_found);
  resp->set_max_seq(r->max_seq);
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::GetLocalUsage(
    grpc::ServerContext*, const v1::GetLocalUsageRequest*,
    v1::GetLocalUsageResponse* resp) {
  absl::StatusOr<std::vector<KindUsage>> usage = d_.store->Usage();
  if (!usage.ok()) return ToGrpcStatus(usage.status());
  for (const KindUsage& u : *usage) {
    v1::KindUsage* k = resp->add_kinds();
    k->set_kind(u.kind);
    k->set_own_count(u.own_count);
    k->set_own_bytes(u.own_bytes);
    k->set_fetched_count(u.fetched_count);
    k->set_fetched_bytes(u.fetched_bytes);
  }
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::ListEvictable(
    grpc::ServerContext*, const v1::ListEvictableRequest* req,
    v1::ListEvictableResponse* resp) {
  uint32_t limit = req->limit() == 0 ? 1000 : req->limit();
  if (limit > kMaxPageSize) {
    return Invalid(absl::StrCat("limit ", req->limit(), " is above ",
                                kMaxPageSize, ": ask for fewer at a time"));
  }
  std::optional<Kind> kind;
  if (req->kind() != v1::SIDECAR_KIND_UNSPECIFIED) {
    if (!v1::SidecarKind_IsValid(req->kind())) {
      return Invalid(absl::StrCat("kind ", req->kind(), " is not known"));
    }
    kind = req->kind();
  }
  absl::StatusOr<std::vector<LocalRecord>> rows =
      d_.store->ListEvictable(kind, limit);
  if (!rows.ok()) return ToGrpcStatus(rows.status());
  for (const LocalRecord& r : *rows) RecordToProto(r, resp->add_sidecars());
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::ListLocal(grpc::ServerContext*,
                                            const v1::ListLocalRequest* req,
                                            v1::ListLocalResponse* resp) {
  uint32_t limit = req->page_size() == 0 ? 1000 : req->page_size();
  if (limit > kMaxPageSize) {
    return Invalid(
        absl::StrCat("page_size ", limit, " is above ", kMaxPageSize));
  }
  std::optional<SidecarKey> after;
  if (!req->page_token().empty()) {
    absl::StatusOr<SidecarKey> k = ParseSidecarUri(req->page_token());
    if (!k.ok()) {
      return Invalid(
          "page_token is not one this service handed out; start "
          "again with an empty token");
    }
    after = *k;
  }
  std::optional<v1::SidecarStatus> status;
  if (req->status() != v1::SIDECAR_STATUS_UNSPECIFIED) {
    if (!v1::SidecarStatus_IsValid(req->status())) {
      return Invalid("status filter is not a known status");
    }
    status = req->status();
  }
  absl::StatusOr<std::vector<LocalRecord>> rows =
      d_.store->List(after, limit, status);
  if (!rows.ok()) return ToGrpcStatus(rows.status());
  for (const LocalRecord& r : *rows) RecordToProto(r, resp->add_sidecars());
  if (rows->size() == limit) {
    resp->set_next_page_token(PageToken(rows->back().key));
  }
  return grpc::Status::OK;
}

namespace {

// The cache's order (KeyLess) on keys.
bool EntryKeyLess(const EntryKey& a, const EntryKey& b) {
  auto wa = ContentWords(a.content), wb = ContentWords(b.content);
  if (wa != wb) return wa < wb;
  return KeyTail(a) < KeyTail(b);
}

}  // namespace

grpc::Status AvailabilityService::ListMissing(grpc::ServerContext*,
                                              const v1::ListMissingRequest* req,
                                              v1::ListMissingResponse* resp) {
  const size_t limit = req->page_size() == 0 ? 1000 : req->page_size();
  if (limit > kMaxPageSize) {
    return Invalid(
        absl::StrCat("page_size ", limit, " is above ", kMaxPageSize));
  }
  std::vector<bool> kind_wanted(256, req->kinds().empty());
  for (int k : req->kinds()) {
    if (k <= 0 || !v1::SidecarKind_IsValid(k)) {
      return Invalid(absl::StrCat("kinds: ", k, " is not a sidecar kind"));
    }
    kind_wanted[static_cast<uint8_t>(k)] = true;
  }
  std::optional<EntryKey> after;
  if (!req->page_token().empty()) {
    absl::StatusOr<SidecarKey> k = ParseSidecarUri(req->page_token());
    if (k.ok()) after = FindEntryKey(*k);
    if (!after) {
      return Invalid(
          "page_token is not one this service handed out; start "
          "again with an empty token");
    }
  }
  // Each peer's entries are sorted; take up to `limit` candidates from each
  // (after the token), scanning at most kScanCap entries per peer and call.
  // Every peer is complete up to `bound`, the smallest last key of a peer
  // that stopped early, so keys up to there can be answered.
  constexpr size_t kScanCap = 1 << 20;
  std::vector<PeerCache::OriginView> views = d_.cache->Views();
  std::optional<OriginEntries> self;
  std::vector<EntryKey> candidates;
  std::optional<EntryKey> bound;
  for (const PeerCache::OriginView& v : views) {
    if (v.info.device_id == d_.cache->self_id()) {
      self = v.entries;
      continue;
    }
    size_t taken = 0, scanned = 0;
    std::optional<EntryKey> last_scanned;
    bool stopped = false;
    v.entries.ForEachAfter(after ? &*after : nullptr, [&](const Entry& e) {
      if (taken >= limit || scanned >= kScanCap) {
        stopped = true;
        return false;
      }
      ++scanned;
      last_scanned = EntryKey::Of(e);
      if (e.removed() || !kind_wanted[static_cast<uint8_t>(e.kind())]) {
        return true;
      }
      candidates.push_back(*last_scanned);
      ++taken;
      return true;
    });
    if (stopped && last_scanned) {
      if (!bound || EntryKeyLess(*last_scanned, *bound)) bound = last_scanned;
    }
  }
  std::sort(candidates.begin(), candidates.end(), EntryKeyLess);
  candidates.erase(std::unique(candidates.begin(), candidates.end()),
                   candidates.end());
  // Whether a peer advertises a newer generator version of `k` than `mine`.
  auto stale = [&](const EntryKey& k, const Entry& mine) {
    const absl::string_view have = GeneratorVersionOf(mine);
    for (const PeerCache::OriginView& v : views) {
      if (v.info.device_id == d_.cache->self_id()) continue;
      std::optional<Entry> theirs = v.entries.Find(k);
      if (theirs && !theirs->removed() &&
          IsNewerGeneratorVersion(GeneratorVersionOf(*theirs), have)) {
        return true;
      }
    }
    return false;
  };
  std::optional<EntryKey> last;
  for (const EntryKey& k : candidates) {
    if (bound && EntryKeyLess(*bound, k)) break;
    if (resp->keys_size() == static_cast<int>(limit)) break;
    last = k;
    std::optional<Entry> mine = self ? self->Find(k) : std::nullopt;
    if (mine && !mine->removed() &&
        !(req->include_stale() && stale(k, *mine))) {
      continue;
    }
    KeyToProto(KeyOf(k), resp->add_keys());
  }
  // More may follow whenever a peer stopped early or the page filled up.
  if (bound || resp->keys_size() == static_cast<int>(limit)) {
    std::optional<EntryKey> next = last ? last : bound;
    if (bound && (!last || EntryKeyLess(*last, *bound)) &&
        resp->keys_size() < static_cast<int>(limit)) {
      next = bound;
    }
    if (next) resp->set_next_page_token(PageToken(KeyOf(*next)));
  }
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::GetLocal(grpc::ServerContext*,
                                           const v1::GetLocalRequest* req,
                                           v1::GetLocalResponse* resp) {
  if (static_cast<size_t>(req->keys_size()) > kMaxKeysPerRequest) {
    return TooMany("keys", req->keys_size());
  }
  absl::StatusOr<std::vector<SidecarKey>> keys =
      ParseKeys(req->keys(), /*reject_duplicates=*/false);
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  resp->mutable_entries()->Reserve(keys->size());
  for (const SidecarKey& k : *keys) {
    v1::GetLocalResponse::Entry* out = resp->add_entries();
    std::optional<EntryKey> ek = FindEntryKey(k);
    std::optional<Entry> e;
    if (ek) e = d_.cache->FindSelf(*ek);
    if (!e || e->removed()) continue;
    out->set_ready(true);
    out->set_size(e->size());
    out->set_sha256(DigestBytes(e->sha256).data(), 32);
    out->set_relative_path(RelativePath(k));
  }
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::WhoHas(grpc::ServerContext* ctx,
                                         const v1::WhoHasRequest* req,
                                         v1::WhoHasResponse* resp) {
  absl::Time start = absl::Now();
  grpc::Status st = WhoHasImpl(req, resp);
  // Time spent in the handler, for clients and benchmarks that want to tell
  // server work from transport.
  ctx->AddTrailingMetadata(
      "server-micros",
      std::to_string(absl::ToInt64Microseconds(absl::Now() - start)));
  return st;
}

grpc::Status AvailabilityService::WhoHasImpl(const v1::WhoHasRequest* req,
                                             v1::WhoHasResponse* resp) {
  if (static_cast<size_t>(req->keys_size()) > kMaxKeysPerRequest) {
    return TooMany("keys", req->keys_size());
  }
  absl::StatusOr<std::vector<SidecarKey>> keys =
      ParseKeys(req->keys(), /*reject_duplicates=*/false);
  if (!keys.ok()) return ToGrpcStatus(keys.status());
  std::vector<std::optional<EntryKey>> ekeys;
  ekeys.reserve(keys->size());
  for (const SidecarKey& k : *keys) ekeys.push_back(FindEntryKey(k));
  std::vector<PeerCache::OriginView> views = d_.cache->Views();
  const size_t nv = views.size();
  PeerCache::Found found;
  PeerCache::Lookup(views, ekeys, &found);
  auto held = [&](size_t i) {
    for (size_t v = 0; v < nv; ++v)
      if (found.At(i, v) != nullptr) return true;
    return false;
  };
  absl::flat_hash_map<Uuid, DeviceStats> stats = d_.peers->Stats();

  absl::flat_hash_map<Uuid, uint32_t> device_index;
  auto device_ref = [&](const Uuid& id, const OriginInfo* info) -> uint32_t {
    auto [it, inserted] = device_index.try_emplace(
        id, static_cast<uint32_t>(resp->devices_size()));
    if (!inserted) return it->second;
    v1::DeviceRef* d = resp->add_devices();
    d->set_device_id(id.ToString());
    bool local = id == d_.cache->self_id();
    d->set_is_local(local);
    if (info) {
      d->set_transfer_address(info->transfer_address);
      d->set_name(info->name);
    }
    if (local) {
      d->set_online(true);
    } else if (auto s = stats.find(id); s != stats.end()) {
      d->set_online(s->second.online);
      SetTime(s->second.last_contact, d->mutable_last_seen());
      d->set_rtt_micros(
          static_cast<uint32_t>(absl::ToInt64Microseconds(s->second.rtt)));
      d->set_throughput_bytes_per_sec(
          static_cast<uint64_t>(s->second.throughput));
    }
    return it->second;
  };

  // A leaf mirrors little: what it does not know, a full member may.
  KeyAnswers delegated;
  if (d_.delegation != nullptr) d_.delegation->Lookup(*keys, &delegated);
  std::vector<std::vector<PeerManager::DirectAnswer>> direct;
  if (req->query_peers() && d_.delegation == nullptr) {
    std::vector<SidecarKey> unknown;
    for (size_t i = 0; i < keys->size(); ++i) {
      if (!held(i)) unknown.push_back((*keys)[i]);
    }
    if (!unknown.empty()) {
      std::vector<std::vector<PeerManager::DirectAnswer>> answers;
      d_.peers->QueryPeers(unknown, &answers);
      direct.resize(keys->size());
      size_t j = 0;
      for (size_t i = 0; i < keys->size(); ++i) {
        if (!held(i)) direct[i] = std::move(answers[j++]);
      }
    }
  }
  resp->mutable_results()->Reserve(keys->size());
  std::vector<HeldCopy> copies;
  for (size_t i = 0; i < keys->size(); ++i) {
    v1::KeyHolders* kh = resp->add_results();
    copies.clear();
    for (size_t v = 0; v < nv; ++v) {
      const Entry* e = found.At(i, v);
      if (e == nullptr) continue;
      v1::Holder* holder = kh->add_holders();
      holder->set_device(device_ref(views[v].info.device_id, &views[v].info));
      holder->set_size(e->size());
      holder->set_sha256(DigestBytes(e->sha256).data(), 32);
      absl::string_view version = GeneratorVersionOf(*e);
      holder->set_generator_version(std::string(version));
      copies.push_back({version, e->sha256, e->size()});
    }
    if (!delegated.empty()) {
      for (const DelegatedHolder& a : delegated[i]) {
        bool mirrored = false;
        for (size_t v = 0; v < nv && !mirrored; ++v) {
          mirrored =
              found.At(i, v) != nullptr && views[v].info.device_id == a.device;
        }
        if (mirrored) continue;
        auto view = d_.cache->View(a.device);
        v1::Holder* holder = kh->add_holders();
        holder->set_device(device_ref(a.device, view ? &view->info : nullptr));
        holder->set_size(a.size);
        holder->set_sha256(std::string(DigestBytes(a.sha256)));
        holder->set_generator_version(a.generator_version);
        copies.push_back({a.generator_version, a.sha256, a.size});
      }
    }
    for (std::string& c : ConflictingVersions(copies)) {
      kh->add_conflicting_versions(std::move(c));
    }
    if (!direct.empty()) {
      for (const auto& a : direct[i]) {
        auto view = d_.cache->View(a.device);
        v1::Holder* holder = kh->add_holders();
        holder->set_device(device_ref(a.device, view ? &view->info : nullptr));
        holder->set_size(a.size);
        holder->set_sha256(std::string(DigestBytes(a.sha256)));
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::Resolve(grpc::ServerContext* ctx,
                                          const v1::ResolveRequest* req,
                                          v1::ResolveResponse* resp) {
  ScopedLogFields log_fields({{"request_id", RequestId(*ctx)}});
  grpc::Status s = ResolveOne(*req, resp);
  SC_LOG(DEBUG) << "resolve " << req->key().content_uuid() << ": "
                << (s.ok() ? v1::ResolveResponse::Outcome_Name(resp->outcome())
                           : s.error_message())
                << ", " << resp->sources_size() << " source(s)";
  return s;
}

grpc::Status AvailabilityService::ResolveBatch(
    grpc::ServerContext* ctx, const v1::ResolveBatchRequest* req,
    v1::ResolveBatchResponse* resp) {
  ScopedLogFields log_fields({{"request_id", RequestId(*ctx)}});
  SC_LOG(DEBUG) << "resolve a batch of " << req->requests_size();
  if (static_cast<size_t>(req->requests_size()) > kMaxKeysPerRequest) {
    return TooMany("requests", req->requests_size());
  }
  for (int i = 0; i < req->requests_size(); ++i) {
    grpc::Status s = ResolveOne(req->requests(i), resp->add_responses());
    if (!s.ok()) {
      return grpc::Status(s.error_code(), absl::StrCat("requests[", i, "].",
                                                       s.error_message()));
    }
  }
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::ResolveOne(const v1::ResolveRequest& r,
                                             v1::ResolveResponse* resp) {
  const v1::ResolveRequest* req = &r;
  absl::StatusOr<SidecarKey> key = KeyFromProto(req->key());
  if (!key.ok()) {
    return Invalid(absl::StrCat("key: ", key.status().message()));
  }
  v1::ResolveMode mode = req->mode();
  if (!v1::ResolveMode_IsValid(mode)) {
    return Invalid("mode must be local-only, fetch-only or fetch-or-generate");
  }
  if (mode == v1::RESOLVE_MODE_UNSPECIFIED) {
    mode = v1::RESOLVE_MODE_FETCH_OR_GENERATE;
  }
  resp->set_relative_path(RelativePath(*key));
  std::optional<EntryKey> ek = FindEntryKey(*key);

  // Every known holder, this device included: the local copy is stale if
  // another holds a newer version, and conflicts count every copy.
  struct Holder {
    Uuid device;
    OriginInfo info;
    uint64_t size;
    Sha256Digest sha;
    absl::string_view version;  // in GeneratorVersionDict: never freed
  };
  std::vector<Holder> holders;
  // Versions of delegated holders, which the views do not keep alive.
  std::deque<std::string> delegated_versions;
  std::optional<Entry> self;
  if (ek) {
    std::vector<PeerCache::OriginView> views = d_.cache->Views();
    PeerCache::Found found;
    PeerCache::Lookup(views, absl::MakeConstSpan(&ek, 1), &found);
    for (size_t v = 0; v < views.size(); ++v) {
      const Entry* e = found.At(0, v);
      if (e == nullptr) continue;
      if (views[v].info.device_id == d_.cache->self_id()) {
        self = *e;
        continue;
      }
      holders.push_back({views[v].info.device_id, views[v].info, e->size(),
                         e->sha256, GeneratorVersionOf(*e)});
    }
  }
  auto report_conflicts = [&] {
    std::vector<HeldCopy> copies;
    for (const Holder& h : holders)
      copies.push_back({h.version, h.sha, h.size});
    if (self) {
      copies.push_back({GeneratorVersionOf(*self), self->sha256, self->size()});
    }
    std::vector<std::string> conflicts = ConflictingVersions(copies);
    for (std::string& c : conflicts) {
      resp->add_conflicting_versions(std::move(c));
    }
    if (conflicts.empty()) return std::string();
    return absl::StrCat("; holders disagree on the bytes of version(s) ",
                        absl::StrJoin(resp->conflicting_versions(), ", "));
  };
  absl::flat_hash_map<Uuid, DeviceStats> stats;
  std::vector<Candidate> candidates;
  // Ranks `holders` into resp->sources; how many online.
  auto add_sources = [&](auto keep) {
    if (stats.empty()) stats = d_.peers->Stats();
    candidates.clear();
    std::vector<size_t> index;
    for (size_t i = 0; i < holders.size(); ++i) {
      const Holder& h = holders[i];
      if (!keep(h)) continue;
      Candidate c;
      c.device = h.device;
      c.size = h.size;
      c.sha256 = h.sha;
      c.generator_version = h.version;
      if (auto it = stats.find(h.device); it != stats.end()) {
        c.online = it->second.online;
        c.rtt = it->second.rtt;
        c.throughput = it->second.throughput;
        c.demoted = it->second.demoted;
      }
      candidates.push_back(c);
      index.push_back(i);
    }
    std::vector<size_t> order = RankSources(candidates);
    for (size_t o : order) {
      const Holder& h = holders[index[o]];
      v1::Source* s = resp->add_sources();
      s->set_device_id(h.device.ToString());
      s->set_transfer_address(h.info.transfer_address);
      s->set_name(h.info.name);
      s->set_size(h.size);
      s->set_sha256(std::string(DigestBytes(h.sha)));
      s->set_generator_version(std::string(h.version));
      s->set_rtt_micros(
          static_cast<uint32_t>(absl::ToInt64Microseconds(candidates[o].rtt)));
      s->set_throughput_bytes_per_sec(
          static_cast<uint64_t>(candidates[o].throughput));
    }
    return order.size();
  };

  std::string local_note;
  if (self && !self->removed()) {
    std::string path;
    if (LocalFilePresent(*key, self->size(), &path)) {
      resp->set_outcome(v1::ResolveResponse::OUTCOME_LOCAL);
      resp->set_local_path(path);
      resp->set_size(self->size());
      resp->set_sha256(std::string(DigestBytes(self->sha256)));
      absl::string_view mine = GeneratorVersionOf(*self);
      resp->set_generator_version(std::string(mine));
      std::string reason = "a ready local copy is present";
      absl::string_view newest;
      for (const Holder& h : holders) {
        if (IsNewerGeneratorVersion(h.version, mine) &&
            (newest.empty() || IsNewerGeneratorVersion(h.version, newest))) {
          newest = h.version;
        }
      }
      if (!newest.empty()) {
        resp->set_stale(true);
        size_t online = add_sources([&](const Holder& h) {
          return IsNewerGeneratorVersion(h.version, mine);
        });
        absl::StrAppend(&reason, "; it is stale: its generator version \"",
                        mine, "\" is older than \"", newest, "\", which ",
                        online, " online device(s) hold");
      }
      absl::StrAppend(&reason, report_conflicts());
      resp->set_reason(std::move(reason));
      if (d_.usage != nullptr) d_.usage->Touch(*key);
      return grpc::Status::OK;
    }
    local_note = absl::StrCat("registered as ready here but ", path,
                              " is missing or has the wrong size; ");
  }

  auto generate = [&](std::string why) {
    bool gen = mode != v1::RESOLVE_MODE_FETCH_ONLY;
    resp->set_outcome(gen ? v1::ResolveResponse::OUTCOME_GENERATE
                          : v1::ResolveResponse::OUTCOME_UNAVAILABLE);
    resp->set_reason(absl::StrCat(local_note, why));
    return grpc::Status::OK;
  };
  if (mode == v1::RESOLVE_MODE_LOCAL_ONLY) {
    return generate("no ready local copy and the mode is local-only");
  }

  // A leaf asks a full member (or the online peers) about the holders it
  // does not mirror; only now, so that a ready local copy costs no call.
  if (d_.delegation != nullptr) {
    KeyAnswers delegated;
    d_.delegation->Lookup({*key}, &delegated);
    for (DelegatedHolder& a : delegated[0]) {
      if (a.device == d_.cache->self_id()) continue;
      bool mirrored =
          std::any_of(holders.begin(), holders.end(),
                      [&](const Holder& h) { return h.device == a.device; });
      if (mirrored) continue;
      auto view = d_.cache->View(a.device);
      delegated_versions.push_back(std::move(a.generator_version));
      holders.push_back({a.device, view ? view->info : OriginInfo{}, a.size,
                         a.sha256, delegated_versions.back()});
    }
  }
  if (holders.empty() && req->query_peers() && d_.delegation == nullptr) {
    std::vector<std::vector<PeerManager::DirectAnswer>> answers;
    d_.peers->QueryPeers({*key}, &answers);
    for (const auto& a : answers[0]) {
      auto view = d_.cache->View(a.device);
      holders.push_back({a.device, view ? view->info : OriginInfo{}, a.size,
                         a.sha256, absl::string_view()});
    }
  }
  if (holders.empty()) {
    return generate("no known device has it");
  }
  size_t online = add_sources([](const Holder&) { return true; });
  if (online == 0) {
    std::vector<std::string> names;
    for (const Holder& h : holders) {
      names.push_back(h.info.name.empty() ? h.device.ToString() : h.info.name);
    }
    return generate(
        absl::StrCat("its holders are offline: ", absl::StrJoin(names, ", ")));
  }
  resp->set_outcome(v1::ResolveResponse::OUTCOME_REMOTE);
  std::string reason =
      absl::StrCat(local_note, online, " online device(s) have it");
  if (!resp->sources(0).generator_version().empty()) {
    absl::StrAppend(&reason, "; the first holds generator version \"",
                    resp->sources(0).generator_version(), "\"");
  }
  absl::StrAppend(&reason, report_conflicts());
  resp->set_reason(std::move(reason));
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::AvailabilityEvent>* AvailabilityService::Watch(
    grpc::CallbackServerContext*, const v1::WatchRequest* req) {
  return d_.hub->Open(*req);
}

grpc::Status AvailabilityService::ListPeers(grpc::ServerContext*,
                                            const v1::ListPeersRequest*,
                                            v1::ListPeersResponse* resp) {
  for (const PeerStatus& p : d_.peers->List()) {
    v1::PeerInfo* out = resp->add_peers();
    out->set_peer_address(p.address);
    out->set_transfer_address(p.transfer_address);
    out->set_name(p.name);
    out->set_online(p.online);
    out->set_configured(p.configured);
    SetTime(p.last_contact, out->mutable_last_contact());
    out->set_rtt_micros(
        static_cast<uint32_t>(absl::ToInt64Microseconds(p.rtt)));
    out->set_last_error(p.last_error);
    out->set_leaf(p.leaf);
    out->set_not_mirrored(p.not_mirrored);
    out->set_throughput_bytes_per_sec(static_cast<uint64_t>(p.throughput));
    if (p.device_id) {
      out->set_device_id(p.device_id->ToString());
      if (auto v = d_.cache->View(*p.device_id)) {
        out->set_sidecars(v->live_count);
        out->set_generation(v->state.generation);
        out->set_max_seq(v->state.max_seq);
      }
    }
  }
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::ReportTransfer(
    grpc::ServerContext* ctx, const v1::ReportTransferRequest* req,
    v1::ReportTransferResponse*) {
  ScopedLogFields log_fields({{"request_id", RequestId(*ctx)}});
  absl::StatusOr<Uuid> id = Uuid::Parse(req->device_id());
  if (!id.ok()) {
    return Invalid(absl::StrCat("device_id: ", id.status().message()));
  }
  d_.peers->ReportTransfer(*id, req->bytes(),
                           absl::Microseconds(req->duration_micros()),
                           req->ok(), req->corrupt());
  return grpc::Status::OK;
}

}  // namespace sidecar::availability

namespace sidecar::availability {

void AvailabilityService::MemberToProto(const MemberView& m,
                                        v1::Member* out) const {
  out->set_device_id(m.cert.device_id.ToString());
  out->set_name(m.name);
  out->set_fingerprint(m.cert.Fingerprint());
  out->set_certificate(m.cert.der);
  out->set_admitted_by(m.admitted_by.ToString());
  if (std::optional<MemberView> by = d_.library->Find(m.admitted_by)) {
    out->set_admitted_by_name(by->name);
  }
  SetTime(m.admitted_at, out->mutable_admitted_at());
  out->set_peer_address(m.peer_address);
  out->set_transfer_address(m.transfer_address);
  out->set_self(m.cert.device_id == d_.library->self_id());
  out->set_removed(m.removed);
  if (m.removed) {
    out->set_removed_by(m.removed_by.ToString());
    SetTime(m.removed_at, out->mutable_removed_at());
  }
}

grpc::Status AvailabilityService::AnnounceTransfer(
    grpc::ServerContext*, const v1::AnnounceTransferRequest* req,
    v1::AnnounceTransferResponse* resp) {
  const std::string& address = req->transfer_address();
  if (address.empty() || address.size() > 256 ||
      address.find(':') == std::string::npos) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "transfer_address must be host:port");
  }
  if (!d_.transfer_address_fixed) {
    d_.peers->SetSelfTransferAddress(address);
    v1::Hello self = d_.peers->SelfHello();
    d_.cache->NoteOrigin(
        {d_.cache->self_id(), self.peer_address(), address, self.name()});
    d_.library->NoteAddresses(d_.cache->self_id(), "", address);
  }
  resp->set_transfer_address(d_.peers->SelfHello().transfer_address());
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::CreateInvite(
    grpc::ServerContext*, const v1::CreateInviteRequest* req,
    v1::CreateInviteResponse* resp) {
  absl::StatusOr<Pairing::Invite> invite =
      d_.pairing->CreateInvite(absl::Seconds(req->ttl_seconds()));
  if (!invite.ok()) return ToGrpcStatus(invite.status());
  resp->set_code(invite->code);
  SetTime(invite->expires_at, resp->mutable_expires_at());
  resp->set_peer_address(d_.peers->SelfHello().peer_address());
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::JoinLibrary(grpc::ServerContext*,
                                              const v1::JoinLibraryRequest* req,
                                              v1::JoinLibraryResponse* resp) {
  std::vector<std::string> addresses;
  if (!req->address().empty()) {
    addresses.push_back(req->address());
  } else {
    addresses = d_.join_addresses;
  }
  if (addresses.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "no address given and no --peers configured: give "
                        "the address `sidecarctl pair invite` printed");
  }
  absl::StatusOr<Pairing::JoinResult> r =
      d_.pairing->Join(req->code(), addresses, d_.join_timeout);
  if (!r.ok()) return ToGrpcStatus(r.status());
  MemberToProto(r->inviter, resp->mutable_inviter());
  resp->set_members(static_cast<uint32_t>(r->members));
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::ListMembers(grpc::ServerContext*,
                                              const v1::ListMembersRequest* req,
                                              v1::ListMembersResponse* resp) {
  for (const MemberView& m : d_.library->List(req->include_removed())) {
    MemberToProto(m, resp->add_members());
  }
  resp->set_version(d_.library->version());
  return grpc::Status::OK;
}

grpc::Status AvailabilityService::Unpair(grpc::ServerContext*,
                                         const v1::UnpairRequest* req,
                                         v1::UnpairResponse* resp) {
  const std::string& want = req->device();
  if (want.empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "name the device to unpair: its id, a prefix of "
                        "it, or its name (see `sidecarctl devices`)");
  }
  std::vector<MemberView> hits;
  for (const MemberView& m : d_.library->List(false)) {
    const std::string id = m.cert.device_id.ToString();
    if (id == want || m.name == want) {
      hits = {m};
      break;
    }
    if (id.rfind(want, 0) == 0) hits.push_back(m);
  }
  if (hits.empty()) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("no member \"", want, "\" (see `sidecarctl devices`)"));
  }
  if (hits.size() > 1) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("\"", want, "\" matches ", hits.size(),
                                     " members; give more of the device id"));
  }
  absl::StatusOr<v1::MemberRecord> r =
      d_.library->Remove(hits[0].cert.device_id);
  if (!r.ok()) return ToGrpcStatus(r.status());
  if (std::optional<MemberView> m = d_.library->Find(hits[0].cert.device_id)) {
    MemberToProto(*m, resp->mutable_removed());
  }
  return grpc::Status::OK;
}

}  // namespace sidecar::availability
