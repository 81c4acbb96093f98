#include "services/availability/string_dict.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sidecar::availability {

StringDict::StringDict(const Limits& limits,
                       absl::Span<const absl::string_view> well_known)
    : limits_(limits), names_(limits.capacity, nullptr) {
  absl::MutexLock lock(&mu_);
  for (absl::string_view v : well_known) AddLocked(v);
}

StringDict::~StringDict() {
  for (const std::string* s : names_) delete s;
}

absl::StatusOr<uint16_t> StringDict::Intern(absl::string_view name) {
  absl::MutexLock lock(&mu_);
  if (auto it = ids_.find(name); it != ids_.end()) return it->second;
  if (next_ >= limits_.capacity) {
    return absl::ResourceExhaustedError(
        absl::StrCat("more than ", limits_.capacity, " distinct ", limits_.what,
                     " are known; ", limits_.hint));
  }
  return AddLocked(name);
}

absl::StatusOr<uint16_t> StringDict::InternFromPeer(absl::string_view name,
                                                    const Uuid& peer) {
  absl::MutexLock lock(&mu_);
  if (auto it = ids_.find(name); it != ids_.end()) return it->second;
  if (next_ >= limits_.capacity - limits_.local_reserve) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "peers have named ", next_, " distinct ", limits_.what,
        "; the rest of the dictionary is kept for this device's own "
        "sidecars"));
  }
  size_t& added = added_by_[peer];
  if (added >= limits_.per_peer_share) {
    return absl::ResourceExhaustedError(
        absl::StrCat("this peer has named ", added, " new ", limits_.what,
                     ", as many as one peer may; ", limits_.hint));
  }
  ++added;
  return AddLocked(name);
}

uint16_t StringDict::AddLocked(absl::string_view name) {
  auto* s = new std::string(name);
  names_[next_] = s;
  uint16_t id = static_cast<uint16_t>(next_++);
  ids_.emplace(*s, id);
  return id;
}

size_t StringDict::added_by(const Uuid& peer) const {
  absl::MutexLock lock(&mu_);
  auto it = added_by_.find(peer);
  return it == added_by_.end() ? 0 : it->second;
}

std::optional<uint16_t> StringDict::Find(absl::string_view name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = ids_.find(name);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

size_t StringDict::size() const {
  absl::MutexLock lock(&mu_);
  return next_;
}

}  // namespace sidecar::availability
