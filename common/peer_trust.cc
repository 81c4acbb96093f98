#include "common/peer_trust.h"

#include "absl/time/clock.h"

namespace sidecar {

void PeerTrust::Set(const std::vector<DeviceCertificate>& members) {
  absl::flat_hash_map<Uuid, DeviceCertificate> by_device;
  absl::flat_hash_map<Sha256Digest, Uuid> by_key;
  for (const DeviceCertificate& c : members) {
    by_device[c.device_id] = c;
    by_key[c.key_sha256] = c.device_id;
  }
  absl::MutexLock lock(&mu_);
  bool same = by_device.size() == by_device_.size();
  for (const auto& [id, c] : by_device) {
    if (!same) break;
    auto it = by_device_.find(id);
    same = it != by_device_.end() && it->second.der == c.der;
  }
  if (same) return;
  by_device_ = std::move(by_device);
  by_key_ = std::move(by_key);
  ++version_;
}

std::optional<Uuid> PeerTrust::DeviceForKey(
    const Sha256Digest& key_sha256) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_key_.find(key_sha256);
  if (it == by_key_.end()) return std::nullopt;
  return it->second;
}

std::optional<DeviceCertificate> PeerTrust::Find(const Uuid& device) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = by_device_.find(device);
  if (it == by_device_.end()) return std::nullopt;
  return it->second;
}

void PeerTrust::RefreshAfterMiss(absl::Time missed) const {
  absl::MutexLock lock(&refresh_mu_);
  if (last_refresh_ < missed - absl::Milliseconds(200)) {
    last_refresh_ = absl::Now();
    refresh_();
  }
}

std::optional<Uuid> PeerTrust::DeviceForKeyOrRefresh(
    const Sha256Digest& key_sha256) const {
  std::optional<Uuid> id = DeviceForKey(key_sha256);
  if (id || !refresh_) return id;
  RefreshAfterMiss(absl::Now());
  return DeviceForKey(key_sha256);
}

std::optional<DeviceCertificate> PeerTrust::FindOrRefresh(
    const Uuid& device) const {
  std::optional<DeviceCertificate> cert = Find(device);
  if (cert || !refresh_) return cert;
  RefreshAfterMiss(absl::Now());
  return Find(device);
}

uint64_t PeerTrust::version() const {
  absl::ReaderMutexLock lock(&mu_);
  return version_;
}

}  // namespace sidecar
