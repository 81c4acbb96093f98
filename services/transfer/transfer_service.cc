#include "services/transfer/transfer_service.h"

#include "absl/strings/str_cat.h"
#include "common/request_limits.h"
#include "common/transport.h"

namespace sidecar::transfer {
namespace {}  // namespace

TransferService::TransferService(JobStore* jobs, Fetcher* fetcher,
                                 AvailabilityClient* availability,
                                 JobEvents* events, FetchPolicy policy)
    : jobs_(jobs),
      fetcher_(fetcher),
      availability_(availability),
      events_(events),
      policy_(std::move(policy)) {}

grpc::Status TransferService::Fetch(grpc::ServerContext*,
                                    const v1::FetchRequest* req,
                                    v1::FetchResponse* resp) {
  if (static_cast<size_t>(req->keys_size()) > kMaxFetchKeysPerRequest) {
    return grpc::Status(
        grpc::StatusCode::RESOURCE_EXHAUSTED,
        absl::StrCat(req->keys_size(), " keys in one Fetch; at most ",
                     kMaxFetchKeysPerRequest, ": split the request"));
  }
  if (!v1::Priority_IsValid(req->priority())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "priority must be prefetch, normal or interactive");
  }
  v1::Priority priority = req->priority() == v1::PRIORITY_UNSPECIFIED
                              ? v1::PRIORITY_NORMAL
                              : req->priority();
  std::vector<SidecarKey> keys;
  for (int i = 0; i < req->keys_size(); ++i) {
    absl::StatusOr<SidecarKey> k = KeyFromProto(req->keys(i));
    if (!k.ok()) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("keys[", i, "]: ", k.status().message()));
    }
    keys.push_back(std::move(*k));
  }
  absl::StatusOr<std::vector<Resolution>> resolved =
      availability_->ResolveMany(keys, v1::RESOLVE_MODE_FETCH_OR_GENERATE);
  if (!resolved.ok()) return ToGrpcStatus(resolved.status());
  std::optional<PrefetchPolicy> prefetch;
  if (prefetch_ != nullptr) prefetch = prefetch_->policy();
  std::vector<SidecarKey> to_queue;
  std::vector<v1::FetchResult*> queued_results;
  for (size_t i = 0; i < keys.size(); ++i) {
    const SidecarKey& key = keys[i];
    const Resolution& r = (*resolved)[i];
    v1::FetchResult* out = resp->add_results();
    if (r.outcome == v1::ResolveResponse::OUTCOME_LOCAL) {
      out->set_outcome(v1::FetchResult::OUTCOME_LOCAL);
      out->set_local_path(r.local_path);
      continue;
    }
    if (r.outcome != v1::ResolveResponse::OUTCOME_REMOTE || r.sources.empty()) {
      out->set_outcome(v1::FetchResult::OUTCOME_GENERATE);
      out->set_reason(r.reason.empty() ? "no online device has it" : r.reason);
      continue;
    }
    if (priority == v1::PRIORITY_PREFETCH && prefetch.has_value() &&
        prefetch->rules.ModeOf(key) == PrefetchMode::kNever) {
      out->set_outcome(v1::FetchResult::OUTCOME_GENERATE);
      out->set_reason(
          absl::StrCat("this device never prefetches it (prefetch rule ",
                       prefetch->rules.RuleFor(key),
                       "); fetch it at normal or interactive priority"));
      continue;
    }
    if (std::optional<std::string> why =
            prefetch.has_value()
                ? policy_.GenerateInstead(key, prefetch->metered)
                : policy_.GenerateInstead(key)) {
      out->set_outcome(v1::FetchResult::OUTCOME_GENERATE);
      out->set_reason(*why);
      continue;
    }
    to_queue.push_back(key);
    queued_results.push_back(out);
  }
  bool queued = !to_queue.empty();
  if (queued) {
    absl::StatusOr<std::vector<Job>> jobs =
        jobs_->CreateMany(to_queue, priority);
    if (!jobs.ok()) return ToGrpcStatus(jobs.status());
    for (size_t i = 0; i < jobs->size(); ++i) {
      queued_results[i]->set_outcome(v1::FetchResult::OUTCOME_QUEUED);
      queued_results[i]->set_job_id((*jobs)[i].id);
    }
  }
  if (queued) fetcher_->Wake();
  return grpc::Status::OK;
}

grpc::ServerWriteReactor<v1::JobStatus>* TransferService::WatchJob(
    grpc::CallbackServerContext*, const v1::WatchJobRequest* req) {
  const std::string id = req->job_id();
  return events_->Open(
      id, [&]() -> absl::StatusOr<std::optional<v1::JobStatus>> {
        absl::StatusOr<std::optional<Job>> job = jobs_->Get(id);
        if (!job.ok()) return job.status();
        if (!job->has_value()) return std::optional<v1::JobStatus>();
        return std::optional<v1::JobStatus>(fetcher_->StatusOf(**job));
      });
}

grpc::Status TransferService::Cancel(grpc::ServerContext*,
                                     const v1::CancelRequest* req,
                                     v1::CancelResponse* resp) {
  absl::StatusOr<v1::JobState> s = fetcher_->Cancel(req->job_id());
  if (!s.ok()) return ToGrpcStatus(s.status());
  resp->set_state(*s);
  return grpc::Status::OK;
}

grpc::Status TransferService::ListJobs(grpc::ServerContext*,
                                       const v1::ListJobsRequest* req,
                                       v1::ListJobsResponse* resp) {
  uint32_t limit = req->limit() == 0 ? 100 : req->limit();
  if (limit > 1000) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "limit must be at most 1000");
  }
  absl::StatusOr<std::vector<Job>> jobs =
      jobs_->List(req->active_only(), limit);
  if (!jobs.ok()) return ToGrpcStatus(jobs.status());
  for (const Job& j : *jobs) *resp->add_jobs() = fetcher_->StatusOf(j);
  return grpc::Status::OK;
}

}  // namespace sidecar::transfer

namespace sidecar::transfer {

grpc::Status TransferService::GetPrefetchPolicy(
    grpc::ServerContext*, const v1::GetPrefetchPolicyRequest*,
    v1::PrefetchPolicy* resp) {
  if (prefetch_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "this transfer service has no prefetch policy");
  }
  prefetch_->ToProto(resp);
  return grpc::Status::OK;
}

grpc::Status TransferService::SetPrefetchPolicy(
    grpc::ServerContext*, const v1::SetPrefetchPolicyRequest* req,
    v1::PrefetchPolicy* resp) {
  if (prefetch_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "this transfer service has no prefetch policy");
  }
  if (absl::Status s = prefetch_->Update(*req); !s.ok()) {
    return ToGrpcStatus(s);
  }
  prefetch_->ToProto(resp);
  return grpc::Status::OK;
}

grpc::Status TransferService::GetStoreUsage(grpc::ServerContext*,
                                            const v1::GetStoreUsageRequest*,
                                            v1::GetStoreUsageResponse* resp) {
  if (evictor_ == nullptr || store_ == nullptr) {
    return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                        "this transfer service reports no store usage");
  }
  if (absl::Status s = evictor_->Refresh(); !s.ok()) return ToGrpcStatus(s);
  *resp = evictor_->Report();
  if (absl::StatusOr<uint64_t> free = store_->FreeBytes(); free.ok()) {
    resp->set_free_bytes(*free);
  }
  return grpc::Status::OK;
}

}  // namespace sidecar::transfer
