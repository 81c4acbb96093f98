// AvailabilityClient: what the transfer service asks of the availability
// service on the same device: where to fetch a sidecar from, to record a
// fetched sidecar as READY (so it is gossiped and this device becomes a
// source), and how transfers from each device went (for ranking).
#ifndef SIDECAR_SERVICES_TRANSFER_AVAILABILITY_CLIENT_H_
#define SIDECAR_SERVICES_TRANSFER_AVAILABILITY_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "sidecar/v1/availability.grpc.pb.h"

namespace sidecar::transfer {

class TransferMetrics;

struct FetchSource {
  std::string device_id;
  std::string name;
  std::string transfer_address;
  uint64_t size = 0;
  Sha256Digest sha256{};
  double throughput = 0;  // bytes/s measured by earlier transfers; 0 unknown
  absl::Duration rtt = absl::ZeroDuration();
  std::string generator_version;  // of the source's copy; "" unknown
};

// How logs and messages name a source: "laptop (3f2a1b4c)", or its device
// id if it has no name.
std::string SourceName(const FetchSource& s);

struct Resolution {
  v1::ResolveResponse::Outcome outcome =
      v1::ResolveResponse::OUTCOME_UNSPECIFIED;
  std::string local_path;
  std::vector<FetchSource> sources;  // best first
  std::string reason;
  bool stale = false;  // LOCAL: a holder has a newer generator version
  // Versions of which holders hold different bytes (Resolve).
  std::vector<std::string> conflicting_versions;
};

// Whether a fetch has something to do for a key resolved as `r`: it is
// remote, or the copy here is stale and an online holder has a newer one.
inline bool NeedsFetch(const Resolution& r) {
  return r.outcome == v1::ResolveResponse::OUTCOME_REMOTE ||
         (r.outcome == v1::ResolveResponse::OUTCOME_LOCAL && r.stale &&
          !r.sources.empty());
}

class AvailabilityClient {
 public:
  // `address`: the local availability service. Every call has `timeout`.
  AvailabilityClient(const std::string& address, absl::Duration timeout);

  // Resolve with `mode`; UNAVAILABLE with an actionable message when the
  // availability service cannot be reached.
  absl::StatusOr<Resolution> Resolve(const SidecarKey& key,
                                     v1::ResolveMode mode);

  // Resolve for many keys (any number; sent in batches). Answers in order.
  absl::StatusOr<std::vector<Resolution>> ResolveMany(
      absl::Span<const SidecarKey> keys, v1::ResolveMode mode);

  struct ReadyItem {
    SidecarKey key;
    uint64_t size = 0;
    Sha256Digest sha256{};
    std::string generator_version;
  };
  // Registers many fetched sidecars as READY (sent in batches of 10,000),
  // marked fetched (evictable under a store quota).
  absl::Status RegisterReadyMany(absl::Span<const ReadyItem> items);

  // Registers a fetched sidecar as READY, marked fetched.
  absl::Status RegisterReady(const SidecarKey& key, uint64_t size,
                             const Sha256Digest& sha256,
                             const std::string& generator_version);

  // For the store quota (see Evictor).
  //
  // What READY sidecars use per kind, own and fetched.
  absl::StatusOr<std::vector<v1::KindUsage>> LocalUsage();
  // Fetched READY sidecars of `kind` (UNSPECIFIED: any), least recently
  // used first, at most `limit` (<= 10,000).
  absl::StatusOr<std::vector<v1::LocalSidecar>> ListEvictable(Kind kind,
                                                              uint32_t limit);
  // For each key (at most 10,000), in order: how many *other* devices that
  // are online hold it with exactly `sizes[i]` bytes and `sha256s[i]`.
  absl::StatusOr<std::vector<int>> OnlineOtherHolders(
      absl::Span<const SidecarKey> keys, absl::Span<const uint64_t> sizes,
      absl::Span<const Sha256Digest> sha256s);
  // Withdraws local sidecars (Availability.Remove, at most 10,000 keys):
  // recorded in the change log, so peers learn it. Returns how many were
  // removed.
  absl::StatusOr<uint32_t> Remove(absl::Span<const SidecarKey> keys);

  // Reports a transfer's outcome (best effort; errors are logged only).
  // Every transfer from a peer ends here, so it is counted here too, in
  // `metrics` (set_metrics) if they are on.
  void ReportTransfer(const std::string& device_id, uint64_t bytes,
                      absl::Duration duration, bool ok, bool corrupt);
  // Call before any transfer; `metrics` must outlive this client.
  void set_metrics(TransferMetrics* metrics) { metrics_ = metrics; }

  v1::Availability::Stub* stub() { return stub_.get(); }

 private:
  std::string address_;
  absl::Duration timeout_;
  std::unique_ptr<v1::Availability::Stub> stub_;
  TransferMetrics* metrics_ = nullptr;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_AVAILABILITY_CLIENT_H_
