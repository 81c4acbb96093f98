#include "services/availability/local_inventory.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "services/availability/generator_version.h"

namespace sidecar::availability {

LocalInventory::LocalInventory(InventoryStore* store, PeerCache* cache,
                               std::function<void()> on_change,
                               GenerationSigner sign_generation)
    : store_(store),
      cache_(cache),
      on_change_(std::move(on_change)),
      sign_generation_(std::move(sign_generation)) {}

absl::Status LocalInventory::Load() {
  absl::MutexLock lock(&write_mu_);
  return LoadLocked();
}

absl::StatusOr<uint64_t> LocalInventory::StartNewGeneration() {
  uint64_t generation;
  {
    absl::MutexLock lock(&write_mu_);
    absl::StatusOr<DeviceIdentity> id = store_->ResetChangeLog();
    if (!id.ok()) return id.status();
    generation = id->generation;
    SC_RETURN_IF_ERROR(LoadLocked());
  }
  if (on_change_) on_change_();
  return generation;
}

uint64_t LocalInventory::generation() const {
  absl::MutexLock lock(&write_mu_);
  return store_->identity().generation;
}

absl::Status LocalInventory::LoadLocked() {
  std::vector<Entry> entries;
  absl::Status bad = absl::OkStatus();
  absl::Status s = store_->LoadAdvertised([&](const ChangeRecord& c) {
    if (!bad.ok()) return;
    absl::StatusOr<EntryKey> k = ToEntryKey(c.key);
    if (!k.ok()) {
      bad = k.status();
      return;
    }
    absl::StatusOr<uint16_t> version =
        GeneratorVersionDict::Global().Intern(c.generator_version);
    if (!version.ok()) {
      bad = version.status();
      return;
    }
    entries.push_back(Entry::Make(c.key.content, c.key.kind, c.key.format,
                                  k->variant, c.size, c.sha256, c.seq,
                                  c.removed, *version));
  });
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;
  absl::StatusOr<uint64_t> max_seq = store_->MaxSeq();
  if (!max_seq.ok()) return max_seq.status();
  max_seq_ = *max_seq;
  size_t n = entries.size();
  const uint64_t generation = store_->identity().generation;
  cache_->InitSelf(generation,
                   sign_generation_ ? sign_generation_(generation) : "",
                   max_seq_, std::move(entries));
  SC_LOG(INFO) << "loaded " << n << " advertised entries, max seq " << max_seq_;
  return absl::OkStatus();
}

absl::Status LocalInventory::ValidateRecord(const LocalRecord& r) {
  const std::string where = KeyDebugString(r.key);
  if (r.status != v1::SIDECAR_STATUS_PENDING &&
      r.status != v1::SIDECAR_STATUS_READY &&
      r.status != v1::SIDECAR_STATUS_FAILED) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": status must be pending, ready or failed"));
  }
  if (r.status == v1::SIDECAR_STATUS_READY && !r.sha256.has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where,
                     ": a READY sidecar needs its 32-byte sha256 so that peers "
                     "can verify what they fetch"));
  }
  if (r.size > kMaxEntrySize) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": size ", r.size, " exceeds the 1 TiB limit"));
  }
  if (absl::Status s = ValidateGeneratorVersion(r.generator_version); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": ", s.message()));
  }
  return absl::OkStatus();
}

absl::StatusOr<LocalInventory::RegisterResult> LocalInventory::Register(
    std::vector<LocalRecord> records) {
  RegisterResult result;
  std::vector<ChangeRecord> changes;
  std::vector<Entry> entries;
  absl::MutexLock lock(&write_mu_);
  uint64_t seq = max_seq_;
  for (const LocalRecord& r : records) {
    absl::StatusOr<EntryKey> k = ToEntryKey(r.key);
    if (!k.ok()) return k.status();
    std::optional<Entry> cur = cache_->FindSelf(*k);
    bool live = cur.has_value() && !cur->removed();
    bool ready = r.status == v1::SIDECAR_STATUS_READY;
    bool change = false;
    uint16_t version = 0;
    ChangeRecord c;
    c.key = r.key;
    if (ready) {
      absl::StatusOr<uint16_t> v =
          GeneratorVersionDict::Global().Intern(r.generator_version);
      if (!v.ok()) return v.status();
      version = *v;
      change = !live || cur->size() != r.size || cur->sha256 != *r.sha256 ||
               cur->version() != version;
      c.size = r.size;
      c.sha256 = *r.sha256;
      c.generator_version = r.generator_version;
    } else {
      change = live;  // withdrawn: no longer ready
      c.removed = true;
    }
    if (!change) continue;
    c.seq = ++seq;
    entries.push_back(Entry::Make(r.key.content, r.key.kind, r.key.format,
                                  k->variant, c.size, c.sha256, c.seq,
                                  c.removed, version));
    changes.push_back(std::move(c));
  }
  absl::StatusOr<InventoryStore::ApplyResult> applied =
      store_->Apply(records, {}, changes);
  if (!applied.ok()) return applied.status();
  result.registered = applied->upserted;
  result.changes = static_cast<uint32_t>(changes.size());
  if (!changes.empty()) {
    max_seq_ = seq;
    cache_->ApplySelf(std::move(entries), seq);
  }
  result.max_seq = max_seq_;
  if (result.changes > 0 && on_change_) on_change_();
  return result;
}

absl::StatusOr<LocalInventory::RemoveResult> LocalInventory::Remove(
    std::vector<SidecarKey> keys) {
  RemoveResult result;
  std::vector<ChangeRecord> changes;
  std::vector<Entry> entries;
  absl::MutexLock lock(&write_mu_);
  uint64_t seq = max_seq_;
  for (const SidecarKey& key : keys) {
    absl::StatusOr<EntryKey> k = ToEntryKey(key);
    if (!k.ok()) return k.status();
    std::optional<Entry> cur = cache_->FindSelf(*k);
    if (!cur.has_value() || cur->removed()) continue;
    ChangeRecord c;
    c.key = key;
    c.removed = true;
    c.seq = ++seq;
    entries.push_back(Entry::Make(key.content, key.kind, key.format, k->variant,
                                  0, c.sha256, c.seq, true));
    changes.push_back(std::move(c));
  }
  absl::StatusOr<InventoryStore::ApplyResult> applied =
      store_->Apply({}, keys, changes);
  if (!applied.ok()) return applied.status();
  result.removed = applied->removed;
  result.not_found = applied->not_found;
  if (!changes.empty()) {
    max_seq_ = seq;
    cache_->ApplySelf(std::move(entries), seq);
  }
  result.max_seq = max_seq_;
  if (!changes.empty() && on_change_) on_change_();
  return result;
}

uint64_t LocalInventory::max_seq() const {
  absl::MutexLock lock(&write_mu_);
  return max_seq_;
}

}  // namespace sidecar::availability
