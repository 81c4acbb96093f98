// PeerChannels: channels to the members of the library, each pinned to the
// member's certificate (MakePeerChannel), made once per (member, address)
// and kept, so that TLS sessions stay open across calls. Thread-safe.
#ifndef SIDECAR_COMMON_PEER_CHANNELS_H_
#define SIDECAR_COMMON_PEER_CHANNELS_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <tuple>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/device_key.h"
#include "common/peer_trust.h"
#include "common/transport.h"
#include "common/uuid.h"

namespace sidecar {

class PeerChannels {
 public:
  // `key` and `trust` must outlive this. A device the set does not hold
  // is looked up again after a refresh (PeerTrust::FindOrRefresh): a member
  // paired a moment ago is offered by the availability service before the
  // set follows.
  PeerChannels(const DeviceKey* key, const PeerTrust* trust)
      : key_(key), trust_(trust) {}

  // A channel to member `device` at `address` for `traffic`.
  // PERMISSION_DENIED if `device` is not (or no longer) a member: nothing is
  // sent to it.
  absl::StatusOr<std::shared_ptr<grpc::Channel>> Get(
      const Uuid& device, const std::string& address,
      TrafficClass traffic = TrafficClass::kDefault);

 private:
  const DeviceKey* const key_;
  const PeerTrust* const trust_;
  absl::Mutex mu_;
  // Bounded by members x addresses seen; cleared when it grows past 256.
  absl::flat_hash_map<std::tuple<Uuid, std::string, TrafficClass>,
                      std::shared_ptr<grpc::Channel>>
      channels_ ABSL_GUARDED_BY(mu_);
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_PEER_CHANNELS_H_
