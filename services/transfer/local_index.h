// LocalIndex: what this device has READY, as the local availability service
// records it. The transfer service serves only what this says is READY, so
// that a sidecar that is removed, or not yet complete, is never sent.
//
//   LocalIndex index("127.0.0.1:7100");
//   absl::StatusOr<std::vector<std::optional<LocalSidecarInfo>>> found =
//       index.Lookup(keys);
//
// Every Lookup asks the availability service (Availability.GetLocal, which
// answers from memory): there is no cache, so a sidecar removed or turned
// pending stops being served by the next call. Thread-safe; calls block for
// up to the RPC timeout, so call it from a ThreadPool, never from a gRPC
// reaction.
#ifndef SIDECAR_SERVICES_TRANSFER_LOCAL_INDEX_H_
#define SIDECAR_SERVICES_TRANSFER_LOCAL_INDEX_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/request_limits.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "sidecar/v1/availability.grpc.pb.h"

namespace sidecar::transfer {

// A READY local sidecar as registered.
struct LocalSidecarInfo {
  uint64_t size = 0;
  Sha256Digest sha256{};
  // Under the sidecar root, as the availability service reports it. For
  // information only: servers build the path from the validated key.
  std::string relative_path;
};

struct LocalIndexOptions {
  // Deadline of one GetLocal call.
  absl::Duration rpc_timeout = absl::Seconds(2);
  // Keys per GetLocal call (clamped to 1..kMaxKeysPerRequest, what the
  // service accepts).
  size_t batch_size = kMaxKeysPerRequest;
};

class LocalIndex {
 public:
  // `availability_address`: host:port of this device's availability service.
  explicit LocalIndex(std::string availability_address,
                      LocalIndexOptions options = {});
  virtual ~LocalIndex();
  LocalIndex(const LocalIndex&) = delete;
  LocalIndex& operator=(const LocalIndex&) = delete;

  // For each key, in order: its record if READY on this device, else
  // nullopt. Any number of keys (sent in batches). Errors: UNAVAILABLE
  // (the availability service cannot be reached or timed out; the message
  // says where it was looked for), otherwise the service's error. REQUIRES:
  // the keys are valid (from KeyFromProto or ParseSidecarUri).
  virtual absl::StatusOr<std::vector<std::optional<LocalSidecarInfo>>> Lookup(
      absl::Span<const SidecarKey> keys);

  // Lookup of one key.
  absl::StatusOr<std::optional<LocalSidecarInfo>> LookupOne(
      const SidecarKey& key);

  const std::string& address() const { return address_; }

 private:
  absl::Status LookupBatch(absl::Span<const SidecarKey> keys,
                           std::vector<std::optional<LocalSidecarInfo>>* out);

  const std::string address_;
  const LocalIndexOptions options_;
  std::unique_ptr<v1::Availability::Stub> stub_;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_LOCAL_INDEX_H_
