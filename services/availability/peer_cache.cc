#include "services/availability/peer_cache.h"

#include <malloc.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sidecar::availability {

PeerCache::PeerCache(OriginInfo self, WatchHub* hub,
                     size_t max_entries_per_origin)
    : self_id_(self.device_id),
      hub_(hub),
      max_entries_per_origin_(max_entries_per_origin) {
  absl::MutexLock lock(&mu_);
  origins_.emplace(self_id_, std::make_unique<OriginTable>(std::move(self), 0));
}

OriginTable* PeerCache::FindOrCreate(const OriginInfo& info, InfoSource source,
                                     uint64_t generation) {
  auto it = origins_.find(info.device_id);
  if (it == origins_.end()) {
    OriginInfo first = info;
    first.generation_signature.clear();  // set by Replace, with its entries
    it = origins_
             .emplace(info.device_id,
                      std::make_unique<OriginTable>(std::move(first), 0))
             .first;
  } else if (source == InfoSource::kOrigin) {
    it->second->UpdateInfo(info);
  } else {
    it->second->FillInfo(info);
  }
  return it->second.get();
}

void PeerCache::InitSelf(uint64_t generation, std::string generation_signature,
                         uint64_t max_seq, std::vector<Entry> entries) {
  OriginTable::SortAndDedupe(&entries);
  absl::MutexLock lock(&mu_);
  OriginTable* self = origins_.at(self_id_).get();
  self->Replace(generation, max_seq, 0, std::move(entries));
  self->set_generation_signature(std::move(generation_signature));
}

uint64_t PeerCache::Generation(const Uuid& origin) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = origins_.find(origin);
  return it == origins_.end() ? 0 : it->second->generation();
}

void PeerCache::ApplySelf(std::vector<Entry> changes, uint64_t up_to_seq) {
  std::vector<Entry> changed;
  {
    absl::MutexLock lock(&mu_);
    origins_.at(self_id_)->ApplyDelta(std::move(changes), up_to_seq,
                                      hub_ ? &changed : nullptr);
  }
  if (hub_) hub_->PublishEntries(self_id_, /*is_local=*/true, changed);
}

std::optional<Entry> PeerCache::FindSelf(const EntryKey& key) const {
  std::shared_ptr<const EntrySet> entries;
  {
    absl::ReaderMutexLock lock(&mu_);
    entries = origins_.at(self_id_)->entries();
  }
  const Entry* e = entries->Find(key);
  if (e == nullptr) return std::nullopt;
  return *e;
}

absl::Status PeerCache::ApplyRemoteDelta(const OriginInfo& info,
                                         InfoSource source, uint64_t generation,
                                         uint64_t up_to_seq,
                                         std::vector<Entry> batch) {
  if (info.device_id == self_id_) return absl::OkStatus();
  std::vector<Entry> changed;
  {
    absl::MutexLock lock(&mu_);
    OriginTable* t = FindOrCreate(info, source, generation);
    if (t->generation() != generation) {
      return absl::FailedPreconditionError(absl::StrCat(
          "deltas for origin ", info.device_id.ToString(), " generation ",
          generation, " but generation ", t->generation(),
          " is cached; a snapshot is needed first"));
    }
    if (t->entry_count() + batch.size() > max_entries_per_origin_) {
      size_t added = 0;
      for (const Entry& e : batch) added += t->Find(EntryKey::Of(e)) == nullptr;
      if (t->entry_count() + added > max_entries_per_origin_) {
        return absl::ResourceExhaustedError(
            absl::StrCat("origin ", info.device_id.ToString(), " would hold ",
                         t->entry_count() + added, " entries; at most ",
                         max_entries_per_origin_, " are kept per device"));
      }
    }
    t->ApplyDelta(std::move(batch), up_to_seq, hub_ ? &changed : nullptr);
  }
  if (hub_) hub_->PublishEntries(info.device_id, /*is_local=*/false, changed);
  return absl::OkStatus();
}

absl::Status PeerCache::ReplaceRemote(const OriginInfo& info, InfoSource source,
                                      uint64_t generation, uint64_t max_seq,
                                      uint64_t floor_seq,
                                      std::vector<Entry> entries) {
  if (info.device_id == self_id_) return absl::OkStatus();
  if (entries.size() > max_entries_per_origin_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("snapshot of origin ", info.device_id.ToString(), " has ",
                     entries.size(), " entries; at most ",
                     max_entries_per_origin_, " are kept per device"));
  }
  // Snapshots usually arrive in key order already; sorting is the fallback
  // for custom variants whose ids differ between processes.
  if (!std::is_sorted(
          entries.begin(), entries.end(),
          [](const Entry& a, const Entry& b) { return KeyLess(a, b); })) {
    OriginTable::SortAndDedupe(&entries);
  }
  {
    absl::MutexLock lock(&mu_);
    OriginTable* t = FindOrCreate(info, source, generation);
    if (t->generation() > generation) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot of origin ", info.device_id.ToString(), " generation ",
          generation, " is older than the cached generation ",
          t->generation()));
    }
    if (t->generation() == generation && t->max_seq() > max_seq) {
      return absl::OkStatus();  // we already know more; keep it
    }
    // A relay's same-generation snapshot may lack the signature: keep ours.
    if (t->generation() != generation || !info.generation_signature.empty()) {
      t->set_generation_signature(info.generation_signature);
    }
    t->Replace(generation, max_seq, floor_seq, std::move(entries));
  }
  // Receiving a large snapshot leaves many freed message buffers in malloc's
  // arenas; hand them back so the process's footprint is the cache itself.
  malloc_trim(0);
  if (hub_) {
    v1::AvailabilityEvent ev;
    ev.set_type(v1::AvailabilityEvent::TYPE_RESET);
    ev.set_device_id(info.device_id.ToString());
    hub_->Publish(ev);
  }
  return absl::OkStatus();
}

void PeerCache::DropOrigin(const Uuid& origin) {
  if (origin == self_id_) return;
  {
    absl::MutexLock lock(&mu_);
    if (origins_.erase(origin) == 0) return;
  }
  malloc_trim(0);
  if (hub_) {
    v1::AvailabilityEvent ev;
    ev.set_type(v1::AvailabilityEvent::TYPE_RESET);
    ev.set_device_id(origin.ToString());
    hub_->Publish(ev);
  }
}

void PeerCache::NoteOrigin(const OriginInfo& info) {
  if (info.device_id.IsNil()) return;
  absl::MutexLock lock(&mu_);
  auto it = origins_.find(info.device_id);
  if (it == origins_.end()) {
    origins_.emplace(info.device_id, std::make_unique<OriginTable>(info, 0));
  } else {
    it->second->UpdateInfo(info);
  }
}

std::vector<DigestEntry> PeerCache::Digest() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<DigestEntry> out;
  out.reserve(origins_.size());
  for (const auto& [id, t] : origins_) {
    if (t->max_seq() == 0 && t->entry_count() == 0 && t->generation() == 0) {
      continue;  // only addresses known so far
    }
    out.push_back({id, t->generation(), t->max_seq()});
  }
  return out;
}

namespace {
PeerCache::OriginView MakeView(const OriginTable& t) {
  PeerCache::OriginView v;
  v.info = t.info();
  v.state = {t.generation(), t.max_seq(), t.floor_seq(), t.entry_count()};
  v.live_count = t.live_count();
  v.entries = t.entries();
  return v;
}
}  // namespace

std::optional<PeerCache::OriginView> PeerCache::View(const Uuid& origin) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = origins_.find(origin);
  if (it == origins_.end()) return std::nullopt;
  return MakeView(*it->second);
}

std::vector<PeerCache::OriginView> PeerCache::Views() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<OriginView> out;
  out.reserve(origins_.size());
  for (const auto& [id, t] : origins_) out.push_back(MakeView(*t));
  return out;
}

void PeerCache::Lookup(absl::Span<const OriginView> views,
                       absl::Span<const std::optional<EntryKey>> keys,
                       std::vector<const Entry*>* found) {
  const size_t nv = views.size();
  found->assign(keys.size() * nv, nullptr);
  std::vector<const Entry*> column(keys.size());
  for (size_t v = 0; v < nv; ++v) {
    if (views[v].entries->empty()) continue;
    views[v].entries->FindMany(keys, column.data());
    for (size_t i = 0; i < keys.size(); ++i) {
      const Entry* e = column[i];
      if (e != nullptr && !e->removed()) (*found)[i * nv + v] = e;
    }
  }
}

size_t PeerCache::TotalEntries() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, t] : origins_) n += t->entry_count();
  return n;
}

}  // namespace sidecar::availability
