#include "services/availability/variant_dict.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace sidecar::availability {
namespace {

// Ids 0..N-1, in this order. Append only: order decides fixed ids.
constexpr absl::string_view kWellKnown[] = {
    "icon@1x",
    "icon@2x",
    "grid@1x",
    "grid@2x",
    "detail@1x",
    "detail@2x",
    "thumbstrip_preview",
    "thumbstrip_detailed",
    "thumbstrip_mobile",
    "proxy_scrub",
    "proxy_ultra",
    "proxy_quick",
    "proxy_edit",
    "srt",
    "ply",
    "text",
    "default",
};

}  // namespace

VariantDict& VariantDict::Global() {
  static VariantDict* dict = new VariantDict();
  return *dict;
}

VariantDict::VariantDict() : names_(kCapacity, nullptr) {
  absl::MutexLock lock(&mu_);
  for (absl::string_view v : kWellKnown) {
    auto* s = new std::string(v);
    names_[next_] = s;
    ids_.emplace(*s, static_cast<uint16_t>(next_));
    ++next_;
  }
}

absl::StatusOr<uint16_t> VariantDict::Intern(absl::string_view name) {
  absl::MutexLock lock(&mu_);
  if (auto it = ids_.find(name); it != ids_.end()) return it->second;
  if (next_ >= kCapacity) {
    return absl::ResourceExhaustedError(
        "more than 65,536 distinct variant names are known; variants are "
        "meant to be a small vocabulary such as \"grid@2x\"");
  }
  return AddLocked(name);
}

absl::StatusOr<uint16_t> VariantDict::InternFromPeer(absl::string_view name,
                                                     const Uuid& peer) {
  absl::MutexLock lock(&mu_);
  if (auto it = ids_.find(name); it != ids_.end()) return it->second;
  if (next_ >= kCapacity - kLocalReserve) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "peers have named ", next_,
        " distinct variants; the rest of the dictionary is kept for this "
        "device's own sidecars"));
  }
  size_t& added = added_by_[peer];
  if (added >= kPerPeerShare) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this peer has named ", added,
        " new variants, as many as one peer may; variants are meant to be a "
        "small vocabulary such as \"grid@2x\""));
  }
  ++added;
  return AddLocked(name);
}

uint16_t VariantDict::AddLocked(absl::string_view name) {
  auto* s = new std::string(name);
  names_[next_] = s;
  uint16_t id = static_cast<uint16_t>(next_++);
  ids_.emplace(*s, id);
  return id;
}

size_t VariantDict::added_by(const Uuid& peer) const {
  absl::MutexLock lock(&mu_);
  auto it = added_by_.find(peer);
  return it == added_by_.end() ? 0 : it->second;
}

std::optional<uint16_t> VariantDict::Find(absl::string_view name) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = ids_.find(name);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

size_t VariantDict::size() const {
  absl::MutexLock lock(&mu_);
  return next_;
}

}  // namespace sidecar::availability
