// StoreQuota: the store quota's configuration and arithmetic, without I/O.
//
// A device may cap what its sidecars use in total (--store_quota_bytes) and
// per kind (--store_kind_quotas=thumb:2G,proxy:20G). Usage counts every
// READY sidecar, those this device generated (own: never evicted) and those
// fetched from peers (evictable), plus bytes admitted for fetches since the
// last refresh. The Evictor owns one and does the I/O.
//
// Not thread-safe: the Evictor guards it with its mutex.
#ifndef SIDECAR_SERVICES_TRANSFER_STORE_QUOTA_H_
#define SIDECAR_SERVICES_TRANSFER_STORE_QUOTA_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/bytes_format.h"
#include "common/sidecar_key.h"
#include "sidecar/v1/availability.pb.h"

namespace sidecar::transfer {

struct QuotaConfig {
  uint64_t total = 0;                 // 0: no total quota
  std::map<Kind, uint64_t> per_kind;  // kinds without an entry: no quota

  bool enabled() const { return total > 0 || !per_kind.empty(); }
  // `kinds`: comma-separated KIND:SIZE, e.g. "thumb:2G,proxy:20G" (empty:
  // none). INVALID_ARGUMENT naming the bad item.
  static absl::StatusOr<QuotaConfig> Parse(uint64_t total,
                                           absl::string_view kinds);
  // 0 if none.
  uint64_t KindQuota(Kind kind) const;
};

class StoreQuota {
 public:
  explicit StoreQuota(QuotaConfig config) : config_(std::move(config)) {}

  const QuotaConfig& config() const { return config_; }

  // Replaces the usage with what the availability service reports, and
  // forgets the bytes admitted since the last refresh: mostly they are in
  // it now, or their fetches ended. A fetch still running, or registered
  // just after the report was read, is forgotten too, so admissions may pass
  // the quota by that much until the next refresh, which then evicts
  // (Evictor's loop).
  void SetUsage(const std::vector<v1::KindUsage>& kinds);
  // Counts `bytes` of a fetch of `kind` that was let in.
  void Admitted(Kind kind, uint64_t bytes);
  // `bytes` of fetched sidecars of `kind` (`count` of them) were evicted.
  void Evicted(Kind kind, uint64_t count, uint64_t bytes);

  // Bytes in use (READY + admitted), in total or of one kind.
  uint64_t Used() const;
  uint64_t UsedOf(Kind kind) const;

  // What must be freed so that `bytes` more of `kind` fit: over the kind's
  // quota (freed from that kind) and over the total quota (from any kind).
  struct Need {
    uint64_t of_kind = 0;
    uint64_t total = 0;
    bool none() const { return of_kind == 0 && total == 0; }
  };
  Need NeedFor(Kind kind, uint64_t bytes) const;
  // NeedFor(kind, 0) for every kind with a quota, and the total.
  bool Over() const;

  // Why a prefetch of `bytes` of `kind` must wait, for its job status:
  // "store quota of 2.0 GiB for thumb reached (1.9 GiB used); prefetch
  // resumes when space frees". REQUIRES: !NeedFor(kind, bytes).none().
  std::string PrefetchRefusal(Kind kind, uint64_t bytes) const;

  // The usage per kind as last set, evictions applied (admitted bytes not
  // included).
  const std::map<Kind, v1::KindUsage>& usage() const { return usage_; }
  uint64_t admitted() const;

 private:
  QuotaConfig config_;
  std::map<Kind, v1::KindUsage> usage_;
  std::map<Kind, uint64_t> admitted_;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_STORE_QUOTA_H_
