#include "services/availability/delegated_answer.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "services/availability/entry.h"
#include "services/availability/generator_version.h"
#include "services/availability/library.h"

namespace sidecar::availability {

absl::StatusOr<KeyAnswers> ParseDelegatedAnswer(
    const v1::PeerWhoHasResponse& resp, size_t key_count,
    const MemberKeys& members) {
  if (static_cast<size_t>(resp.results_size()) != key_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("answered ", resp.results_size(), " keys of ", key_count));
  }
  if (static_cast<size_t>(resp.devices_size()) > kMaxMembers) {
    return absl::InvalidArgumentError(absl::StrCat(
        "named ", resp.devices_size(), " devices, more than a library has"));
  }
  // nullopt: a valid id of a non-member, whose holdings are dropped.
  std::vector<std::optional<Uuid>> devices;
  for (int i = 0; i < resp.devices_size(); ++i) {
    absl::StatusOr<Uuid> id = Uuid::FromBytes(resp.devices(i));
    if (!id.ok() || id->IsNil()) {
      return absl::InvalidArgumentError(
          absl::StrCat("devices[", i, "] is not a 16-byte device id"));
    }
    devices.push_back(members.IsMember(*id) ? std::optional<Uuid>(*id)
                                            : std::nullopt);
  }
  KeyAnswers out(key_count);
  for (size_t k = 0; k < key_count; ++k) {
    const auto& holders = resp.results(static_cast<int>(k)).holders();
    if (static_cast<size_t>(holders.size()) > devices.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("results[", k, "] lists more holders than devices"));
    }
    for (const auto& h : holders) {
      if (h.device() >= devices.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("results[", k, "] names device ", h.device(), " of ",
                         devices.size()));
      }
      absl::StatusOr<Sha256Digest> sha = DigestFromBytes(h.sha256());
      if (!sha.ok() || h.size() > kMaxEntrySize) {
        return absl::InvalidArgumentError(absl::StrCat(
            "results[", k, "]: a holder's sha256 or size is malformed"));
      }
      if (absl::Status v = ValidateGeneratorVersion(h.generator_version());
          !v.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("results[", k, "]: ", v.message()));
      }
      const std::optional<Uuid>& device = devices[h.device()];
      if (!device) continue;
      bool twice = std::any_of(
          out[k].begin(), out[k].end(),
          [&](const DelegatedHolder& d) { return d.device == *device; });
      if (twice) continue;
      out[k].push_back({*device, h.size(), *sha, h.generator_version()});
    }
  }
  return out;
}

std::optional<std::vector<DelegatedHolder>> AnswerCache::Get(
    const SidecarKey& key, absl::Time now) const {
  absl::MutexLock lock(&mu_);
  auto it = answers_.find(key);
  if (it == answers_.end() || it->second.expires <= now) return std::nullopt;
  return it->second.holders;
}

void AnswerCache::Put(const SidecarKey& key,
                      std::vector<DelegatedHolder> holders, absl::Time now) {
  absl::MutexLock lock(&mu_);
  if (answers_.size() >= capacity_ && !answers_.contains(key)) {
    absl::erase_if(answers_,
                   [&](const auto& kv) { return kv.second.expires <= now; });
    if (answers_.size() >= capacity_) answers_.clear();
  }
  answers_[key] = Cached{std::move(holders), now + ttl_};
}

size_t AnswerCache::size() const {
  absl::MutexLock lock(&mu_);
  return answers_.size();
}

}  // namespace sidecar::availability
