#include "services/transfer/store_quota.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/bytes_format.h"

namespace sidecar::transfer {

absl::StatusOr<QuotaConfig> QuotaConfig::Parse(uint64_t total,
                                               absl::string_view kinds) {
  QuotaConfig c;
  c.total = total;
  for (absl::string_view item :
       absl::StrSplit(kinds, ',', absl::SkipWhitespace())) {
    std::pair<absl::string_view, absl::string_view> kv =
        absl::StrSplit(item, absl::MaxSplits(':', 1));
    std::optional<Kind> kind =
        KindFromName(absl::StripAsciiWhitespace(kv.first));
    if (!kind) {
      return absl::InvalidArgumentError(absl::StrCat(
          "store kind quota '", item, "': '", kv.first,
          "' is no kind (thumb, thumbstrip, proxy, embeddings, ocr, "
          "transcript, gaussian_splat); write KIND:SIZE, e.g. thumb:2G"));
    }
    absl::StatusOr<uint64_t> bytes = ParseByteSize(kv.second);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "store kind quota '", item, "': ", bytes.status().message()));
    }
    if (*bytes == 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "store kind quota '", item,
          "': a quota of 0 keeps nothing; leave the kind out for no quota"));
    }
    if (!c.per_kind.emplace(*kind, *bytes).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "store kind quota: ", KindName(*kind), " is given twice"));
    }
  }
  return c;
}

uint64_t QuotaConfig::KindQuota(Kind kind) const {
  auto it = per_kind.find(kind);
  return it == per_kind.end() ? 0 : it->second;
}

uint64_t StoreQuota::StartRead() { return ++reads_started_; }

bool StoreQuota::SetUsage(uint64_t read,
                          const std::vector<v1::KindUsage>& kinds) {
  if (read <= read_set_) return false;
  read_set_ = read;
  usage_.clear();
  for (const v1::KindUsage& k : kinds) usage_[k.kind()] = k;
  // Ended before `read` started: registered before it, so in `kinds`.
  ended_.erase(ended_.begin(), ended_.lower_bound(read));
  return true;
}

void StoreQuota::Admitted(Kind kind, uint64_t bytes) {
  running_[kind] += bytes;
}

void StoreQuota::Ended(Kind kind, uint64_t bytes) {
  uint64_t& r = running_[kind];
  bytes = std::min(r, bytes);
  r -= bytes;
  if (r == 0) running_.erase(kind);
  if (bytes > 0) ended_[reads_started_][kind] += bytes;
}

void StoreQuota::Evicted(Kind kind, uint64_t count, uint64_t bytes) {
  v1::KindUsage& u = usage_[kind];
  u.set_kind(kind);
  u.set_fetched_count(u.fetched_count() - std::min(u.fetched_count(), count));
  u.set_fetched_bytes(u.fetched_bytes() - std::min(u.fetched_bytes(), bytes));
}

uint64_t StoreQuota::UsedOf(Kind kind) const {
  return ReadOf(kind) + AdmittedOf(kind);
}

uint64_t StoreQuota::ReadOf(Kind kind) const {
  auto it = usage_.find(kind);
  if (it == usage_.end()) return 0;
  return it->second.own_bytes() + it->second.fetched_bytes();
}

uint64_t StoreQuota::Read() const {
  uint64_t sum = 0;
  for (const auto& [kind, u] : usage_) sum += u.own_bytes() + u.fetched_bytes();
  return sum;
}

uint64_t StoreQuota::AdmittedOf(Kind kind) const {
  uint64_t sum = 0;
  if (auto it = running_.find(kind); it != running_.end()) sum += it->second;
  for (const auto& [read, kinds] : ended_) {
    if (auto it = kinds.find(kind); it != kinds.end()) sum += it->second;
  }
  return sum;
}

uint64_t StoreQuota::Used() const { return Read() + admitted(); }

uint64_t StoreQuota::admitted() const {
  uint64_t sum = running();
  for (const auto& [read, kinds] : ended_) {
    for (const auto& [kind, b] : kinds) sum += b;
  }
  return sum;
}

uint64_t StoreQuota::running() const {
  uint64_t sum = 0;
  for (const auto& [kind, b] : running_) sum += b;
  return sum;
}

StoreQuota::Need StoreQuota::Excess(Kind kind, uint64_t used_of_kind,
                                    uint64_t used) const {
  Need n;
  if (uint64_t q = config_.KindQuota(kind); q > 0 && used_of_kind > q) {
    n.of_kind = used_of_kind - q;
  }
  if (config_.total > 0 && used > config_.total) n.total = used - config_.total;
  return n;
}

StoreQuota::Need StoreQuota::NeedFor(Kind kind, uint64_t bytes) const {
  return Excess(kind, UsedOf(kind) + bytes, Used() + bytes);
}

StoreQuota::Need StoreQuota::ExcessOfRead(Kind kind) const {
  return Excess(kind, ReadOf(kind), Read());
}

bool StoreQuota::Over() const {
  if (!NeedFor(v1::SIDECAR_KIND_UNSPECIFIED, 0).none()) return true;
  for (const auto& [kind, q] : config_.per_kind) {
    if (NeedFor(kind, 0).of_kind > 0) return true;
  }
  return false;
}

std::string StoreQuota::PrefetchRefusal(Kind kind, uint64_t bytes) const {
  Need n = NeedFor(kind, bytes);
  const char* tail = "; prefetch resumes when space frees";
  if (n.of_kind > 0) {
    return absl::StrCat("store quota of ", HumanBytes(config_.KindQuota(kind)),
                        " for ", KindName(kind), " reached (",
                        HumanBytes(UsedOf(kind)), " used, ", HumanBytes(bytes),
                        " more needed)", tail);
  }
  return absl::StrCat("store quota of ", HumanBytes(config_.total),
                      " reached (", HumanBytes(Used()), " used, ",
                      HumanBytes(bytes), " more needed)", tail);
}

}  // namespace sidecar::transfer
