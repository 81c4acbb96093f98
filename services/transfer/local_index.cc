#include "services/transfer/local_index.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/transport.h"

namespace sidecar::transfer {

LocalIndex::LocalIndex(std::string availability_address,
                       LocalIndexOptions options)
    : address_(std::move(availability_address)),
      options_(options),
      stub_(v1::Availability::NewStub(MakeLocalChannel(address_))) {}

LocalIndex::~LocalIndex() = default;

absl::StatusOr<std::vector<std::optional<LocalSidecarInfo>>> LocalIndex::Lookup(
    absl::Span<const SidecarKey> keys) {
  std::vector<std::optional<LocalSidecarInfo>> out;
  out.reserve(keys.size());
  const size_t batch =
      std::clamp<size_t>(options_.batch_size, 1, kMaxKeysPerRequest);
  for (size_t start = 0; start < keys.size(); start += batch) {
    SC_RETURN_IF_ERROR(LookupBatch(keys.subspan(start, batch), &out));
  }
  return out;
}

absl::StatusOr<std::optional<LocalSidecarInfo>> LocalIndex::LookupOne(
    const SidecarKey& key) {
  absl::StatusOr<std::vector<std::optional<LocalSidecarInfo>>> found =
      Lookup(absl::MakeConstSpan(&key, 1));
  if (!found.ok()) return found.status();
  return std::move((*found)[0]);
}

absl::Status LocalIndex::LookupBatch(
    absl::Span<const SidecarKey> keys,
    std::vector<std::optional<LocalSidecarInfo>>* out) {
  v1::GetLocalRequest req;
  req.mutable_keys()->Reserve(keys.size());
  for (const SidecarKey& k : keys) KeyToProto(k, req.add_keys());
  v1::GetLocalResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, options_.rpc_timeout);
  grpc::Status st = stub_->GetLocal(&ctx, req, &resp);
  if (!st.ok()) {
    if (st.error_code() == grpc::StatusCode::UNAVAILABLE ||
        st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return absl::UnavailableError(
          absl::StrCat("the local availability service at ", address_,
                       " is not answering (", st.error_message(),
                       "); is sidecar-availability running there? (set "
                       "--availability to its address)"));
    }
    return absl::Status(
        static_cast<absl::StatusCode>(st.error_code()),
        absl::StrCat("availability service at ", address_,
                     ": GetLocal failed: ", st.error_message()));
  }
  if (static_cast<size_t>(resp.entries_size()) != keys.size()) {
    return absl::InternalError(absl::StrCat(
        "availability service at ", address_, ": GetLocal answered ",
        resp.entries_size(), " entries for ", keys.size(), " keys"));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    const v1::GetLocalResponse::Entry& e = resp.entries(i);
    if (!e.ready()) {
      out->push_back(std::nullopt);
      continue;
    }
    absl::StatusOr<Sha256Digest> sha = DigestFromBytes(e.sha256());
    if (!sha.ok()) {
      return absl::InternalError(
          absl::StrCat("availability service at ", address_, ": GetLocal gave ",
                       KeyDebugString(keys[i]), " a checksum of ",
                       e.sha256().size(), " bytes"));
    }
    out->push_back(LocalSidecarInfo{e.size(), *sha, e.relative_path()});
  }
  return absl::OkStatus();
}

}  // namespace sidecar::transfer
