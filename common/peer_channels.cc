#include "common/peer_channels.h"

#include "absl/strings/str_cat.h"
#include "common/transport.h"

namespace sidecar {

absl::StatusOr<std::shared_ptr<grpc::Channel>> PeerChannels::Get(
    const Uuid& device, const std::string& address, TrafficClass traffic) {
  std::optional<DeviceCertificate> cert = trust_->FindOrRefresh(device);
  if (!cert) {
    return absl::PermissionDeniedError(absl::StrCat(
        "device ", device.ToString(), " is not a member of the library"));
  }
  absl::MutexLock lock(&mu_);
  auto key = std::make_tuple(device, address, traffic);
  auto it = channels_.find(key);
  if (it != channels_.end()) return it->second;
  if (channels_.size() >= 256) channels_.clear();
  std::shared_ptr<grpc::Channel> ch =
      MakePeerChannel(address, *key_, *cert, traffic);
  channels_.emplace(std::move(key), ch);
  return ch;
}

}  // namespace sidecar
