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
  // A refresh that started after the miss has run (it ran under this lock):
  // it saw whatever the miss was looking for, if that exists.
  if (last_refresh_ >= missed) return;
  // Otherwise wait out the rest of the interval and refresh, so that a
  // member admitted just after the last refresh is not refused, while any
  // number of misses (a non-member calling in a loop) costs at most one
  // refresh per interval.
  const absl::Time earliest = last_refresh_ + kMinRefreshInterval;
  if (absl::Now() < earliest) absl::SleepFor(earliest - absl::Now());
  last_refresh_ = absl::Now();
  refresh_();
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
