#include "services/availability/local_inventory.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "services/availability/generator_version.h"
#include "services/availability/origin_table.h"
#include "services/availability/variant_dict.h"

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
  return LoadLocked(/*use_snapshot=*/true);
}

absl::StatusOr<uint64_t> LocalInventory::StartNewGeneration() {
  uint64_t generation;
  {
    absl::MutexLock lock(&write_mu_);
    absl::StatusOr<DeviceIdentity> id = store_->ResetChangeLog();
    if (!id.ok()) return id.status();
    generation = id->generation;
    // A new generation: any snapshot is of an older one.
    SC_RETURN_IF_ERROR(LoadLocked(/*use_snapshot=*/false));
  }
  if (on_change_) on_change_();
  return generation;
}

uint64_t LocalInventory::generation() const {
  absl::MutexLock lock(&write_mu_);
  return store_->identity().generation;
}

namespace {

// Interns names through a global dictionary, remembering the last few: a
// device has a handful of variants and generator versions, so a load of
// millions of rows takes the dictionaries' locks a handful of times.
class InternMemo {
 public:
  using InternFn = std::function<absl::StatusOr<uint16_t>(absl::string_view)>;
  explicit InternMemo(InternFn intern) : intern_(std::move(intern)) {}

  absl::StatusOr<uint16_t> Intern(const std::string& name) {
    auto it = ids_.find(name);
    if (it != ids_.end()) return it->second;
    absl::StatusOr<uint16_t> id = intern_(name);
    if (id.ok()) ids_.emplace(name, *id);
    return id;
  }

 private:
  const InternFn intern_;
  absl::flat_hash_map<std::string, uint16_t> ids_;
};

}  // namespace

absl::StatusOr<Entries> LocalInventory::LoadRows(uint64_t after_seq) {
  Entries entries;
  InternMemo variants(
      [](absl::string_view v) { return VariantDict::Global().Intern(v); });
  InternMemo versions([](absl::string_view v) {
    return GeneratorVersionDict::Global().Intern(v);
  });
  absl::Status bad = absl::OkStatus();
  absl::Status s =
      store_->LoadAdvertisedAfter(after_seq, [&](const ChangeRecord& c) {
        if (!bad.ok()) return;
        absl::StatusOr<uint16_t> variant = variants.Intern(c.key.variant);
        absl::StatusOr<uint16_t> version = versions.Intern(c.generator_version);
        if (!variant.ok() || !version.ok()) {
          bad = variant.ok() ? version.status() : variant.status();
          return;
        }
        entries.push_back(Entry::Make(c.key.content, c.key.kind, c.key.format,
                                      *variant, c.size, c.sha256, c.seq,
                                      c.removed, *version));
      });
  if (!s.ok()) return s;
  if (!bad.ok()) return bad;
  return entries;
}

bool LocalInventory::SnapshotHoldsRow(const SelfSnapshot& snapshot,
                                      const ChangeRecord& row) {
  // The snapshot is sorted by key: a binary search, not a pass over
  // millions of entries.
  std::optional<EntryKey> key = FindEntryKey(row.key);
  if (!key) return false;
  const Entries& entries = snapshot.entries;
  auto it = std::lower_bound(
      entries.begin(), entries.end(), *key,
      [](const Entry& e, const EntryKey& k) { return KeyLess(e, k); });
  if (it == entries.end() || !KeyEqual(*it, *key)) return false;
  return it->seq() == row.seq && it->removed() == row.removed &&
         (row.removed || (it->sha256 == row.sha256 && it->size() == row.size));
}

absl::StatusOr<std::optional<SelfSnapshot>> LocalInventory::UsableSnapshot(
    uint64_t max_seq, uint64_t floor) {
  // A copy: the analysis cannot see that the lambda runs under write_mu_.
  const std::string path = snapshot_path_;
  auto unusable = [&path](absl::string_view why) {
    SC_LOG(INFO) << "own-origin snapshot " << path << " not used (" << why
                 << "): loading the whole change log";
    return std::nullopt;
  };
  absl::StatusOr<SelfSnapshot> snap = ReadSelfSnapshot(path);
  if (!snap.ok()) {
    if (absl::IsNotFound(snap.status())) return unusable("there is none");
    return unusable(snap.status().ToString());
  }
  const SelfSnapshotInfo& info = snap->info;
  const DeviceIdentity id = store_->identity();
  if (info.device_id != id.device_id || info.generation != id.generation) {
    return unusable(absl::StrCat(
        "of device ", info.device_id.ToString(), " generation ",
        info.generation, "; the database is generation ", id.generation));
  }
  if (info.max_seq > max_seq || info.floor_seq > floor) {
    return unusable(absl::StrCat("reaches seq ", info.max_seq,
                                 " beyond the database's ", max_seq,
                                 ": restored from a backup?"));
  }
  if (floor > info.max_seq) {
    // Tombstones logged after the snapshot may be gone with their keys.
    return unusable(absl::StrCat("compaction raised the floor to ", floor,
                                 ", above its seq ", info.max_seq));
  }
  if (info.max_seq > 0) {
    absl::StatusOr<std::optional<ChangeRecord>> row =
        store_->ChangeAt(info.max_seq);
    if (!row.ok()) return row.status();
    if (!row->has_value() || !SnapshotHoldsRow(*snap, **row)) {
      return unusable(absl::StrCat("the database's row at seq ", info.max_seq,
                                   " is not the one it holds"));
    }
  }
  return std::move(*snap);
}

namespace {

// The own origin from `snapshot` and the change-log rows logged after it
// (`rows`, any order, a key perhaps more than once): the newest entry of
// each key, without the snapshot's tombstones at or below `floor` (those
// compaction dropped from the log since).
Entries MergeSnapshot(Entries snapshot, Entries rows, uint64_t floor) {
  OriginTable::SortAndDedupe(&rows);
  const auto dropped = [floor](const Entry& e) {
    return e.removed() && e.seq() <= floor;
  };
  if (rows.empty() && std::none_of(snapshot.begin(), snapshot.end(), dropped)) {
    return snapshot;
  }
  Entries out;
  ReserveEntries(&out, snapshot.size() + rows.size());
  auto a = snapshot.begin();
  auto b = rows.begin();
  while (a != snapshot.end() || b != rows.end()) {
    if (b == rows.end() || (a != snapshot.end() && KeyLess(*a, *b))) {
      if (!dropped(*a)) out.push_back(*a);
      ++a;
      continue;
    }
    // Rows are newer than anything in the snapshot: a row replaces the
    // snapshot's entry of its key.
    if (a != snapshot.end() && !KeyLess(*b, *a)) ++a;
    out.push_back(*b++);
  }
  return out;
}

}  // namespace

absl::Status LocalInventory::LoadLocked(bool use_snapshot) {
  const absl::Time start = absl::Now();
  absl::StatusOr<uint64_t> max_seq = store_->MaxSeq();
  if (!max_seq.ok()) return max_seq.status();
  absl::StatusOr<uint64_t> floor = store_->FloorSeq();
  if (!floor.ok()) return floor.status();
  std::optional<SelfSnapshot> snap;
  if (use_snapshot && !snapshot_path_.empty()) {
    absl::StatusOr<std::optional<SelfSnapshot>> usable =
        UsableSnapshot(*max_seq, *floor);
    if (!usable.ok()) return usable.status();
    snap = std::move(*usable);
  }
  const absl::Time snapshot_read = absl::Now();
  absl::StatusOr<Entries> rows = LoadRows(snap ? snap->info.max_seq : 0);
  if (!rows.ok()) return rows.status();
  const absl::Time loaded = absl::Now();
  max_seq_ = *max_seq;
  rows_loaded_ = rows->size();
  log_rows_ = rows->size() + (snap ? snap->info.log_rows : 0);
  last_compaction_ = absl::Now();
  compact_at_rows_ = 0;
  const uint64_t snapshot_entries = snap ? snap->entries.size() : 0;
  on_disk_.reset();
  if (snap) on_disk_ = snap->info;
  Entries entries =
      snap ? MergeSnapshot(std::move(snap->entries), *std::move(rows), *floor)
           : *std::move(rows);
  const uint64_t generation = store_->identity().generation;
  cache_->InitSelf(generation,
                   sign_generation_ ? sign_generation_(generation) : "",
                   max_seq_, *floor, std::move(entries));
  if (snap) {
    SC_LOG(INFO) << "own origin from its snapshot (" << snapshot_entries
                 << " entries at seq " << snap->info.max_seq << ", read in "
                 << snapshot_read - start << ") and " << rows_loaded_
                 << " change-log rows after it (" << loaded - snapshot_read
                 << "), built in " << absl::Now() - loaded << "; max seq "
                 << max_seq_;
  } else {
    SC_LOG(INFO) << "loaded " << rows_loaded_ << " change-log rows in "
                 << loaded - snapshot_read << ", own origin built in "
                 << absl::Now() - loaded << "; max seq " << max_seq_;
  }
  return absl::OkStatus();
}

void LocalInventory::set_snapshot_path(std::string path) {
  absl::MutexLock lock(&write_mu_);
  snapshot_path_ = std::move(path);
}

uint64_t LocalInventory::rows_loaded() const {
  absl::MutexLock lock(&write_mu_);
  return rows_loaded_;
}

absl::StatusOr<bool> LocalInventory::WriteSnapshot() {
  absl::MutexLock serial(&snapshot_mu_);
  std::string path;
  SelfSnapshotInfo info;
  std::shared_ptr<const EntrySet> entries;  // the own origin's array
  {
    // No own-origin change comes between the view and log_rows_.
    absl::MutexLock lock(&write_mu_);
    if (snapshot_path_.empty()) return false;
    std::optional<PeerCache::OriginView> self = cache_->View(cache_->self_id());
    if (!self) return absl::InternalError("no own origin");
    path = snapshot_path_;
    info = {cache_->self_id(), self->state.generation, self->state.max_seq,
            self->state.floor_seq, log_rows_};
    entries = self->entries.Array();
    if (on_disk_ == info) return false;
  }
  SC_RETURN_IF_ERROR(WriteSelfSnapshot(path, info, entries->entries()));
  absl::MutexLock lock(&write_mu_);
  on_disk_ = info;
  return true;
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
    log_rows_ += changes.size();
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
    log_rows_ += changes.size();
    cache_->ApplySelf(std::move(entries), seq);
  }
  result.max_seq = max_seq_;
  if (!changes.empty() && on_change_) on_change_();
  return result;
}

uint64_t LocalInventory::log_rows() const {
  absl::MutexLock lock(&write_mu_);
  return log_rows_;
}

bool LocalInventory::CompactionDue(absl::Duration retention) const {
  std::optional<PeerCache::OriginView> self = cache_->View(cache_->self_id());
  if (!self) return false;
  absl::MutexLock lock(&write_mu_);
  const uint64_t live = self->live_count;
  if (log_rows_ > live + live / 2 + 1000 && log_rows_ >= compact_at_rows_) {
    return true;
  }
  return self->state.entry_count > live &&
         absl::Now() - last_compaction_ > retention;
}

absl::StatusOr<LocalInventory::CompactResult> LocalInventory::CompactLog(
    absl::Time tombstones_before, uint64_t batch_seqs) {
  uint64_t generation, max_seq, floor;
  std::optional<OriginEntries> entries;
  {
    absl::MutexLock lock(&write_mu_);
    generation = store_->identity().generation;
    max_seq = max_seq_;
    std::optional<PeerCache::OriginView> self = cache_->View(cache_->self_id());
    if (!self) return absl::InternalError("no own origin");
    entries = self->entries;
    floor = self->state.floor_seq;
  }
  absl::StatusOr<uint64_t> cutoff = store_->SeqLoggedBefore(tombstones_before);
  if (!cutoff.ok()) return cutoff.status();
  // The latest row of every key stays, unless it is a tombstone old enough
  // to drop. Rows logged after the snapshot are beyond max_seq: untouched.
  std::vector<uint64_t> keep, dropped;
  keep.reserve(entries->size());
  entries->ForEach([&](const Entry& e) {
    (e.removed() && e.seq() <= *cutoff ? dropped : keep).push_back(e.seq());
  });
  entries.reset();
  std::sort(keep.begin(), keep.end());
  std::sort(dropped.begin(), dropped.end());
  CompactResult result;
  auto k = keep.begin();
  auto d = dropped.begin();
  for (uint64_t from = 1; from <= max_seq; from += batch_seqs) {
    const uint64_t to = std::min(max_seq + 1, from + batch_seqs);
    auto k_end = std::lower_bound(k, keep.end(), to);
    while (d != dropped.end() && *d < to) floor = std::max(floor, *d++);
    absl::MutexLock lock(&write_mu_);
    if (store_->identity().generation != generation) break;
    absl::StatusOr<uint64_t> deleted = store_->CompactRange(
        from, to,
        absl::MakeConstSpan(keep.data() + (k - keep.begin()), k_end - k),
        floor);
    if (!deleted.ok()) return deleted.status();
    result.deleted += *deleted;
    log_rows_ -= std::min(log_rows_, *deleted);
    k = k_end;
  }
  {
    absl::MutexLock lock(&write_mu_);
    if (store_->identity().generation == generation) {
      cache_->CompactSelf(floor);
    }
    result.floor_seq = floor;
    result.log_rows = log_rows_;
    last_compaction_ = absl::Now();
    compact_at_rows_ = log_rows_ + std::max<uint64_t>(1000, keep.size() / 2);
  }
  if (result.deleted > 0) SC_RETURN_IF_ERROR(store_->VacuumChangeLog());
  return result;
}

uint64_t LocalInventory::max_seq() const {
  absl::MutexLock lock(&write_mu_);
  return max_seq_;
}

}  // namespace sidecar::availability
