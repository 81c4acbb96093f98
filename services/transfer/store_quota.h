// StoreQuota: the store quota's configuration and arithmetic, without I/O.
//
// A device may cap what its sidecars use in total (--store_quota_bytes) and
// per kind (--store_kind_quotas=thumb:2G,proxy:20G). Usage counts every
// READY sidecar, those this device generated (own: never evicted) and those
// fetched from peers (evictable), as last read from the availability
// service, plus the bytes admitted for fetches the read may not include:
// those still running, and those that ended after the read started. The
// Evictor owns one and does the I/O.
//
// Why by read: a read of the usage runs without the Evictor's lock, while
// fetches start and end. A fetch's bytes are sure to be in a read only if
// the fetch ended (registered its sidecar, or gave up) before the read
// started; until such a read is set they are counted as admitted, so that
// no admission passes the quota by a fetch a read missed. The price is a
// bounded overcount: a fetch whose sidecar a read did find, but which ended
// after that read started, counts twice until the next read is set; the
// Evictor reads again before it refuses or evicts on such a count.
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

  // A read of the usage starts: returns its number, for SetUsage. Call it
  // before asking the availability service.
  uint64_t StartRead();
  // Replaces the usage with what read `read` (StartRead's number) returned.
  // Bytes of fetches still running stay counted, and so do those of fetches
  // that ended after the read started (the read may have missed them);
  // those of fetches that ended before it started are in the usage now and
  // stop counting. Returns false, changing nothing, if a read started later
  // was set already (two refreshes raced): its usage is the newer one.
  bool SetUsage(uint64_t read, const std::vector<v1::KindUsage>& kinds);
  // Counts `bytes` of a fetch of `kind` that was let in, until the fetch
  // ends (Ended) and a read started after that is set.
  void Admitted(Kind kind, uint64_t bytes);
  // The fetch admitted for `bytes` of `kind` ended: it registered its
  // sidecar, or failed, or never will register it. Its bytes count until a
  // read started after now is set.
  void Ended(Kind kind, uint64_t bytes);
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
  // What the usage as last read (evictions applied) passes the quotas by:
  // `kind`'s quota and the total. Admitted bytes are left out: this is
  // what the background enforcement evicts, and it must not evict for the
  // overcount above (a fetch the read found, still counted as admitted).
  // Fetches are let in under the quota; the next read shows what they add.
  Need ExcessOfRead(Kind kind) const;
  // NeedFor(kind, 0) for every kind with a quota, and the total.
  bool Over() const;

  // Why a prefetch of `bytes` of `kind` must wait, for its job status:
  // "store quota of 2.0 GiB for thumb reached (1.9 GiB used); prefetch
  // resumes when space frees". REQUIRES: !NeedFor(kind, bytes).none().
  std::string PrefetchRefusal(Kind kind, uint64_t bytes) const;

  // The usage per kind as last set, evictions applied (admitted bytes not
  // included).
  const std::map<Kind, v1::KindUsage>& usage() const { return usage_; }
  // Admitted bytes counted beside the usage: of fetches running, and of
  // fetches ended since the last read set started.
  uint64_t admitted() const;
  // Of fetches running only.
  uint64_t running() const;
  // Of fetches ended since the read last set started: the read may count
  // them too (the overcount above). 0 after a read started later is set.
  uint64_t ended() const { return admitted() - running(); }

 private:
  uint64_t AdmittedOf(Kind kind) const;
  // Bytes the last read found (evictions applied), of one kind or in all.
  uint64_t ReadOf(Kind kind) const;
  uint64_t Read() const;
  // What `used` (of the kind, and in all) passes the quotas by.
  Need Excess(Kind kind, uint64_t used_of_kind, uint64_t used) const;

  QuotaConfig config_;
  std::map<Kind, v1::KindUsage> usage_;
  // Bytes of fetches admitted and not ended yet.
  std::map<Kind, uint64_t> running_;
  // Bytes of fetches that ended, by the number of the last read started
  // before they ended: SetUsage(read) drops those under `read`.
  std::map<uint64_t, std::map<Kind, uint64_t>> ended_;
  uint64_t reads_started_ = 0;
  uint64_t read_set_ = 0;  // the number of the read last set; 0: none
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_STORE_QUOTA_H_
