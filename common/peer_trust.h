// PeerTrust: the devices this device trusts (the members of its library),
// by public key. The peer listener consults it on every call, and channels
// to peers pin the certificates it holds. The availability service feeds it
// from its membership records; the transfer service from the availability
// service's ListMembers.
//
// Thread-safe. Lookups take a reader lock and are cheap (one hash probe).
#ifndef SIDECAR_COMMON_PEER_TRUST_H_
#define SIDECAR_COMMON_PEER_TRUST_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/device_key.h"
#include "common/sha256.h"
#include "common/uuid.h"

namespace sidecar {

class PeerTrust {
 public:
  PeerTrust() = default;
  PeerTrust(const PeerTrust&) = delete;
  PeerTrust& operator=(const PeerTrust&) = delete;

  // Replaces the trusted set with `members` (this device may be among
  // them). Bumps version() if the set changed.
  void Set(const std::vector<DeviceCertificate>& members);

  // The member whose public key hashes to `key_sha256`, or nullopt.
  std::optional<Uuid> DeviceForKey(const Sha256Digest& key_sha256) const;

  // The certificate of member `device`, or nullopt.
  std::optional<DeviceCertificate> Find(const Uuid& device) const;

  bool IsMember(const Uuid& device) const { return Find(device).has_value(); }

  // How to bring the set up to date from its source (may block briefly),
  // for a service that follows membership from elsewhere (the transfer
  // service): a device paired a moment ago is then admitted and reached at
  // once. Set once, before the lookups below are used.
  void set_refresh(std::function<void()> refresh) {
    refresh_ = std::move(refresh);
  }
  bool can_refresh() const { return refresh_ != nullptr; }

  // DeviceForKey and Find that, on a miss, wait for a refresh that started
  // after the miss (one per 200 ms at most, shared by the callers that miss
  // meanwhile; so a caller may wait up to 200 ms plus the refresh) and look
  // again. Without a refresh set, the same as the plain lookups.
  std::optional<Uuid> DeviceForKeyOrRefresh(
      const Sha256Digest& key_sha256) const;
  std::optional<DeviceCertificate> FindOrRefresh(const Uuid& device) const;

  // Changes whenever the set changes (starts at 0, empty).
  uint64_t version() const;

 private:
  static constexpr absl::Duration kMinRefreshInterval = absl::Milliseconds(200);

  // Returns once a refresh that started at or after `missed` has run:
  // runs one, at most one per kMinRefreshInterval, unless another caller's
  // did. REQUIRES: refresh_ set; neither mutex held (refresh_ calls Set).
  void RefreshAfterMiss(absl::Time missed) const
      ABSL_LOCKS_EXCLUDED(refresh_mu_, mu_);

  std::function<void()> refresh_;   // set once before use (set_refresh)
  mutable absl::Mutex refresh_mu_;  // held while refresh_ runs
  mutable absl::Time last_refresh_ ABSL_GUARDED_BY(refresh_mu_) =
      absl::InfinitePast();
  mutable absl::Mutex mu_;
  absl::flat_hash_map<Uuid, DeviceCertificate> by_device_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<Sha256Digest, Uuid> by_key_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sidecar

#endif  // SIDECAR_COMMON_PEER_TRUST_H_
