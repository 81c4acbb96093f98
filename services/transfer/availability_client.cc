#include "services/transfer/availability_client.h"

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/request_limits.h"
#include "common/transport.h"
#include "services/transfer/transfer_metrics.h"

namespace sidecar::transfer {
namespace {

absl::Status Explain(const grpc::Status& s, const std::string& address,
                     absl::string_view what) {
  if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
      s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    return absl::UnavailableError(
        absl::StrCat(what, ": cannot reach the availability service at ",
                     address, " (is it running?): ", s.error_message()));
  }
  return FromGrpcStatus(s);
}

}  // namespace

std::string SourceName(const FetchSource& s) {
  return s.name.empty()
             ? s.device_id
             : absl::StrCat(s.name, " (", s.device_id.substr(0, 8), ")");
}

AvailabilityClient::AvailabilityClient(const std::string& address,
                                       absl::Duration timeout)
    : address_(address),
      timeout_(timeout),
      stub_(v1::Availability::NewStub(MakeLocalChannel(address))) {}

namespace {

Resolution FromProto(const v1::ResolveResponse& resp) {
  Resolution r;
  r.outcome = resp.outcome();
  r.local_path = resp.local_path();
  r.reason = resp.reason();
  r.stale = resp.stale();
  r.conflicting_versions.assign(resp.conflicting_versions().begin(),
                                resp.conflicting_versions().end());
  for (const v1::Source& src : resp.sources()) {
    absl::StatusOr<Sha256Digest> sha = DigestFromBytes(src.sha256());
    if (!sha.ok()) continue;
    FetchSource f;
    f.device_id = src.device_id();
    f.name = src.name();
    f.transfer_address = src.transfer_address();
    f.size = src.size();
    f.sha256 = *sha;
    f.throughput = static_cast<double>(src.throughput_bytes_per_sec());
    f.rtt = absl::Microseconds(src.rtt_micros());
    f.generator_version = src.generator_version();
    if (f.transfer_address.empty()) continue;  // cannot be dialed
    r.sources.push_back(std::move(f));
  }
  return r;
}

}  // namespace

absl::StatusOr<Resolution> AvailabilityClient::Resolve(const SidecarKey& key,
                                                       v1::ResolveMode mode) {
  v1::ResolveRequest req;
  KeyToProto(key, req.mutable_key());
  req.set_mode(mode);
  req.set_query_peers(true);
  v1::ResolveResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_);
  grpc::Status s = stub_->Resolve(&ctx, req, &resp);
  if (!s.ok()) return Explain(s, address_, "resolve");
  return FromProto(resp);
}

absl::StatusOr<std::vector<Resolution>> AvailabilityClient::ResolveMany(
    absl::Span<const SidecarKey> keys, v1::ResolveMode mode) {
  std::vector<Resolution> out;
  out.reserve(keys.size());
  for (size_t base = 0; base < keys.size(); base += kMaxKeysPerRequest) {
    v1::ResolveBatchRequest req;
    for (size_t i = base; i < std::min(keys.size(), base + kMaxKeysPerRequest);
         ++i) {
      v1::ResolveRequest* r = req.add_requests();
      KeyToProto(keys[i], r->mutable_key());
      r->set_mode(mode);
    }
    v1::ResolveBatchResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout_ * 2);
    grpc::Status s = stub_->ResolveBatch(&ctx, req, &resp);
    if (!s.ok()) return Explain(s, address_, "resolve");
    if (resp.responses_size() != req.requests_size()) {
      return absl::InternalError("availability answered a different count");
    }
    for (const auto& r : resp.responses()) out.push_back(FromProto(r));
  }
  return out;
}

absl::Status AvailabilityClient::RegisterReadyMany(
    absl::Span<const ReadyItem> items) {
  for (size_t base = 0; base < items.size(); base += kMaxKeysPerRequest) {
    v1::RegisterRequest req;
    for (size_t i = base; i < std::min(items.size(), base + kMaxKeysPerRequest);
         ++i) {
      v1::LocalSidecar* l = req.add_sidecars();
      KeyToProto(items[i].key, l->mutable_key());
      l->set_size(items[i].size);
      l->set_sha256(DigestBytes(items[i].sha256).data(), 32);
      l->set_status(v1::SIDECAR_STATUS_READY);
      l->set_generator_version(items[i].generator_version);
      l->set_fetched(true);
    }
    v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, timeout_ * 2);
    grpc::Status s = stub_->Register(&ctx, req, &resp);
    if (!s.ok()) return Explain(s, address_, "register fetched sidecars");
  }
  return absl::OkStatus();
}

absl::Status AvailabilityClient::RegisterReady(
    const SidecarKey& key, uint64_t size, const Sha256Digest& sha256,
    const std::string& generator_version) {
  v1::RegisterRequest req;
  v1::LocalSidecar* l = req.add_sidecars();
  KeyToProto(key, l->mutable_key());
  l->set_size(size);
  l->set_sha256(DigestBytes(sha256).data(), 32);
  l->set_status(v1::SIDECAR_STATUS_READY);
  l->set_generator_version(generator_version);
  l->set_fetched(true);
  v1::RegisterResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_);
  grpc::Status s = stub_->Register(&ctx, req, &resp);
  if (!s.ok()) return Explain(s, address_, "register fetched sidecar");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::KindUsage>> AvailabilityClient::LocalUsage() {
  v1::GetLocalUsageResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_ * 2);
  grpc::Status s = stub_->GetLocalUsage(&ctx, {}, &resp);
  if (!s.ok()) return Explain(s, address_, "read the store's usage");
  return std::vector<v1::KindUsage>(resp.kinds().begin(), resp.kinds().end());
}

absl::StatusOr<std::vector<v1::LocalSidecar>> AvailabilityClient::ListEvictable(
    Kind kind, uint32_t limit) {
  v1::ListEvictableRequest req;
  req.set_kind(kind);
  req.set_limit(limit);
  v1::ListEvictableResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_);
  grpc::Status s = stub_->ListEvictable(&ctx, req, &resp);
  if (!s.ok()) return Explain(s, address_, "list eviction candidates");
  return std::vector<v1::LocalSidecar>(resp.sidecars().begin(),
                                       resp.sidecars().end());
}

absl::StatusOr<std::vector<int>> AvailabilityClient::OnlineOtherHolders(
    absl::Span<const SidecarKey> keys, absl::Span<const uint64_t> sizes,
    absl::Span<const Sha256Digest> sha256s) {
  if (keys.size() > kMaxKeysPerRequest || sizes.size() != keys.size() ||
      sha256s.size() != keys.size()) {
    return absl::InvalidArgumentError("OnlineOtherHolders: bad batch");
  }
  v1::WhoHasRequest req;
  for (const SidecarKey& k : keys) KeyToProto(k, req.add_keys());
  v1::WhoHasResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_);
  grpc::Status s = stub_->WhoHas(&ctx, req, &resp);
  if (!s.ok()) return Explain(s, address_, "ask who holds a sidecar");
  if (resp.results_size() != req.keys_size()) {
    return absl::InternalError("availability answered a different count");
  }
  std::vector<int> out(keys.size(), 0);
  for (size_t i = 0; i < keys.size(); ++i) {
    for (const v1::Holder& h : resp.results(i).holders()) {
      if (h.device() >= static_cast<uint32_t>(resp.devices_size())) continue;
      const v1::DeviceRef& d = resp.devices(h.device());
      if (d.is_local() || !d.online()) continue;
      if (h.size() != sizes[i] || h.sha256() != DigestBytes(sha256s[i])) {
        continue;
      }
      ++out[i];
    }
  }
  return out;
}

absl::StatusOr<uint32_t> AvailabilityClient::Remove(
    absl::Span<const SidecarKey> keys) {
  if (keys.size() > kMaxKeysPerRequest) {
    return absl::InvalidArgumentError("Remove: more than 10,000 keys");
  }
  v1::RemoveRequest req;
  for (const SidecarKey& k : keys) KeyToProto(k, req.add_keys());
  v1::RemoveResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_ * 2);
  grpc::Status s = stub_->Remove(&ctx, req, &resp);
  if (!s.ok()) return Explain(s, address_, "withdraw evicted sidecars");
  return resp.removed();
}

void AvailabilityClient::ReportTransfer(const std::string& device_id,
                                        uint64_t bytes, absl::Duration duration,
                                        bool ok, bool corrupt) {
  if (metrics_ != nullptr) metrics_->Received(device_id, bytes, corrupt);
  v1::ReportTransferRequest req;
  req.set_device_id(device_id);
  req.set_bytes(bytes);
  req.set_duration_micros(absl::ToInt64Microseconds(duration));
  req.set_ok(ok);
  req.set_corrupt(corrupt);
  v1::ReportTransferResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout_);
  grpc::Status s = stub_->ReportTransfer(&ctx, req, &resp);
  if (!s.ok()) {
    SC_LOG(WARNING) << "could not report transfer stats: " << s.error_message();
  }
}

}  // namespace sidecar::transfer
