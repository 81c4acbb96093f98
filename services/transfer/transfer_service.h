// TransferService: the local API of the transfer service (Transfer in
// transfer.proto): Fetch, WatchJob, Cancel, ListJobs, GetStoreUsage,
// GetPrefetchPolicy, SetPrefetchPolicy.
#ifndef SIDECAR_SERVICES_TRANSFER_TRANSFER_SERVICE_H_
#define SIDECAR_SERVICES_TRANSFER_TRANSFER_SERVICE_H_

#include "services/transfer/availability_client.h"
#include "services/transfer/evictor.h"
#include "services/transfer/fetcher.h"
#include "services/transfer/job_events.h"
#include "services/transfer/job_store.h"
#include "services/transfer/policy.h"
#include "services/transfer/prefetch_control.h"
#include "sidecar/v1/transfer.grpc.pb.h"

namespace sidecar::transfer {

class TransferService final
    : public v1::Transfer::WithCallbackMethod_WatchJob<v1::Transfer::Service> {
 public:
  // Pointers must outlive the service.
  TransferService(JobStore* jobs, Fetcher* fetcher,
                  AvailabilityClient* availability, JobEvents* events,
                  FetchPolicy policy);

  // Per key: LOCAL, GENERATE (no online holder, the device's strategy, or
  // at PRIORITY_PREFETCH a `never` prefetch rule) or a queued job. Resolution
  // happens now, so "nobody has it" is answered within the call's deadline.
  grpc::Status Fetch(grpc::ServerContext*, const v1::FetchRequest*,
                     v1::FetchResponse*) override;
  grpc::ServerWriteReactor<v1::JobStatus>* WatchJob(
      grpc::CallbackServerContext*, const v1::WatchJobRequest*) override;
  grpc::Status Cancel(grpc::ServerContext*, const v1::CancelRequest*,
                      v1::CancelResponse*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*,
                        v1::ListJobsResponse*) override;
  // Reads the usage afresh from the availability service (UNAVAILABLE if
  // it does not answer) and adds the quotas and the eviction counts.
  grpc::Status GetStoreUsage(grpc::ServerContext*,
                             const v1::GetStoreUsageRequest*,
                             v1::GetStoreUsageResponse*) override;

  // The prefetch policy (PrefetchControl). UNIMPLEMENTED without a control.
  grpc::Status GetPrefetchPolicy(grpc::ServerContext*,
                                 const v1::GetPrefetchPolicyRequest*,
                                 v1::PrefetchPolicy*) override;
  grpc::Status SetPrefetchPolicy(grpc::ServerContext*,
                                 const v1::SetPrefetchPolicyRequest*,
                                 v1::PrefetchPolicy*) override;

  // The prefetch policy's control (rules, metered state); must outlive the
  // service. Without it every kind is lazy and the link unmetered.
  void set_prefetch_control(PrefetchControl* control) { prefetch_ = control; }

  // Where GetStoreUsage reads from; both must outlive the service. Without
  // them it answers UNIMPLEMENTED.
  void set_store(Evictor* evictor, StoreWriter* store) {
    evictor_ = evictor;
    store_ = store;
  }

 private:
  JobStore* const jobs_;
  Fetcher* const fetcher_;
  AvailabilityClient* const availability_;
  JobEvents* const events_;
  const FetchPolicy policy_;
  Evictor* evictor_ = nullptr;
  StoreWriter* store_ = nullptr;
  PrefetchControl* prefetch_ = nullptr;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_TRANSFER_SERVICE_H_
