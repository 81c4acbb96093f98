// Limits of one request that both services state in their protocol
// (protos/sidecar/v1/*.proto) and that their clients must keep to.
#ifndef SIDECAR_COMMON_REQUEST_LIMITS_H_
#define SIDECAR_COMMON_REQUEST_LIMITS_H_

#include <cstddef>

namespace sidecar {

// Most sidecar keys one call may carry: the availability service's Register,
// Remove, GetLocal, WhoHas and ResolveBatch, and the transfer service's
// BatchRead ("at most 10,000 keys" in the protos). Clients send more in
// several calls. Not a page size: ListLocal's page_size and the like have
// limits of their own that only happen to be 10,000 too.
inline constexpr size_t kMaxKeysPerRequest = 10000;

// Most keys one Fetch call of the transfer service's local API may carry
// ("at most 1,000 keys" in transfer.proto): the service refuses more,
// sidecarctl splits.
inline constexpr size_t kMaxFetchKeysPerRequest = 1000;

}  // namespace sidecar

#endif  // SIDECAR_COMMON_REQUEST_LIMITS_H_
