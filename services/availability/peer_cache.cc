#include "services/availability/peer_cache.h"

#include <malloc.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace sidecar::availability {

PeerCache::PeerCache(OriginInfo self, WatchHub* hub,
                     size_t max_entries_per_origin)
    : self_id_(self.device_id),
      hub_(hub),
      max_entries_per_origin_(max_entries_per_origin) {
  absl::MutexLock lock(&mu_);
  shared_ = std::make_shared<const HolderTable>();
  origins_.emplace(self_id_, std::make_unique<OriginTable>(std::move(self), 0));
}

OriginTable* PeerCache::FindOrCreate(const OriginInfo& info, InfoSource source,
                                     uint64_t generation) {
  auto it = origins_.find(info.device_id);
  if (it == origins_.end()) {
    OriginInfo first = info;
    first.generation_signature.clear();  // set by Replace, with its entries
    return AddRemote(std::move(first));
  }
  if (source == InfoSource::kOrigin) {
    it->second->UpdateInfo(info);
  } else {
    it->second->FillInfo(info);
  }
  return it->second.get();
}

OriginTable* PeerCache::AddRemote(OriginInfo info) {
  const Uuid id = info.device_id;
  auto t = std::make_unique<OriginTable>(std::move(info), 0);
  if (free_slots_.empty()) {
    t->set_slot(next_slot_++);
  } else {
    t->set_slot(free_slots_.back());
    free_slots_.pop_back();
  }
  // Its column is empty (a freed slot's was emptied): it reads from there.
  t->ShareInto(shared_);
  return origins_.emplace(id, std::move(t)).first->second.get();
}

void PeerCache::Share(const Uuid& origin) {
  std::shared_ptr<const HolderTable> base;
  std::shared_ptr<const EntrySet> array;
  HolderTable::Slot slot = 0;
  {
    absl::MutexLock lock(&mu_);
    auto it = origins_.find(origin);
    if (it == origins_.end()) return;
    const OriginEntries& entries = it->second->entries();
    if (entries.array() == nullptr) {
      // Changed in place (OriginTable::ApplyDelta): its new table was made
      // from the shared one while share_mu_ kept the other origins as they
      // are there, so it is the shared table now.
      if (entries.table() != shared_) Repoint(entries.table());
      return;
    }
    array = entries.Array();
    slot = it->second->slot();
    base = shared_;
  }
  // Without mu_: lookups go on meanwhile. share_mu_ keeps other remote
  // origins (and this one) as they are in `base`.
  auto next = std::make_shared<const HolderTable>(
      base->WithOrigin(slot, array->entries()));
  absl::MutexLock lock(&mu_);
  Repoint(std::move(next));
}

void PeerCache::Repoint(std::shared_ptr<const HolderTable> table) {
  shared_ = std::move(table);
  for (auto& [id, t] : origins_) {
    if (id != self_id_) t->ShareInto(shared_);
  }
}

void PeerCache::InitSelf(uint64_t generation, std::string generation_signature,
                         uint64_t max_seq, uint64_t floor_seq,
                         std::vector<Entry> entries) {
  OriginTable::SortAndDedupe(&entries);
  absl::MutexLock lock(&mu_);
  OriginTable* self = origins_.at(self_id_).get();
  self->Replace(generation, max_seq, floor_seq, std::move(entries));
  self->set_generation_signature(std::move(generation_signature));
}

void PeerCache::CompactSelf(uint64_t floor) {
  OriginEntries old;
  {
    absl::ReaderMutexLock lock(&mu_);
    old = origins_.at(self_id_)->entries();
  }
  Entries kept;
  kept.reserve(old.size());
  old.ForEach([&](const Entry& e) {
    if (!e.removed() || e.seq() > floor) kept.push_back(e);
  });
  auto compacted = std::make_shared<const EntrySet>(std::move(kept));
  absl::MutexLock lock(&mu_);
  OriginTable* self = origins_.at(self_id_).get();
  // Any change to the own entries since the copy (ApplySelf, or InitSelf
  // for a new generation) would be lost: skip then. None can come while the
  // only caller, LocalInventory::CompactLog, holds LocalInventory's write
  // lock, which every change of the own origin takes; this is a safeguard.
  if (!self->entries().SameAs(old)) return;
  self->InstallCompacted(std::move(compacted), floor);
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
  OriginEntries entries;
  {
    absl::ReaderMutexLock lock(&mu_);
    entries = origins_.at(self_id_)->entries();
  }
  return entries.Find(key);
}

namespace {
PeerCache::OriginView MakeView(const OriginTable& t) {
  PeerCache::OriginView v;
  v.info = t.info();
  v.state = {t.generation(), t.max_seq(), t.floor_seq(), t.entry_count()};
  v.live_count = t.live_count();
  v.entries = t.entries();
  if (const SignedHead* h = t.head()) v.head = *h;
  return v;
}
}  // namespace

void PeerCache::set_signer(Signer signer) {
  absl::MutexLock lock(&head_mu_);
  signer_ = std::move(signer);
}

std::optional<PeerCache::OriginView> PeerCache::SignedSelfView() {
  absl::MutexLock serial(&head_mu_);
  if (!signer_) return std::nullopt;
  StateHasher hasher;
  OriginView view;
  {
    absl::MutexLock lock(&mu_);
    OriginTable* self = origins_.at(self_id_).get();
    view = MakeView(*self);
    if (view.head) return view;
    hasher = self->ForkHasher();
  }
  SignedHead head;
  head.generation = view.state.generation;
  head.max_seq = view.state.max_seq;
  head.state = hasher.Compute(view.entries.Array()->entries());
  head.signature = signer_(HeadStatement(self_id_, head));
  {
    absl::MutexLock lock(&mu_);
    OriginTable* self = origins_.at(self_id_).get();
    self->AdoptHasher(hasher);
    self->set_head(head);
  }
  view.head = std::move(head);
  return view;
}

absl::Status PeerCache::CheckDelta(const OriginTable& t, const Uuid& origin,
                                   uint64_t generation,
                                   const std::vector<Entry>& batch) const {
  if (t.generation() != generation) {
    return absl::FailedPreconditionError(
        absl::StrCat("deltas for origin ", origin.ToString(), " generation ",
                     generation, " but generation ", t.generation(),
                     " is cached; a snapshot is needed first"));
  }
  if (t.entry_count() + batch.size() > max_entries_per_origin_) {
    size_t added = 0;
    for (const Entry& e : batch) added += !t.Find(EntryKey::Of(e));
    if (t.entry_count() + added > max_entries_per_origin_) {
      return absl::ResourceExhaustedError(
          absl::StrCat("origin ", origin.ToString(), " would hold ",
                       t.entry_count() + added, " entries; at most ",
                       max_entries_per_origin_, " are kept per device"));
    }
  }
  return absl::OkStatus();
}

absl::Status PeerCache::CheckAgainstHead(const Uuid& origin,
                                         const SignedHead& head,
                                         OriginTable* candidate) {
  if (candidate->generation() != head.generation ||
      candidate->max_seq() != head.max_seq) {
    return absl::PermissionDeniedError(absl::StrCat(
        "relayed state of origin ", origin.ToString(), " would be at seq ",
        candidate->max_seq(), " of generation ", candidate->generation(),
        ", but the origin's signed head is at seq ", head.max_seq,
        " of generation ", head.generation));
  }
  if (candidate->ComputeStateHash() != head.state) {
    return absl::PermissionDeniedError(
        absl::StrCat("relayed entries of origin ", origin.ToString(),
                     " are not the ones it signed for seq ", head.max_seq,
                     " of generation ", head.generation));
  }
  candidate->set_head(head);
  return absl::OkStatus();
}

absl::Status PeerCache::ApplyRemoteDelta(const OriginInfo& info,
                                         InfoSource source, uint64_t generation,
                                         uint64_t up_to_seq,
                                         std::vector<Entry> batch,
                                         const SignedHead* head) {
  if (info.device_id == self_id_) return absl::OkStatus();
  std::vector<Entry> changed;
  absl::MutexLock share(&share_mu_);
  if (source == InfoSource::kRelay) {
    absl::Status s = ApplyRelayedDelta(info, generation, up_to_seq,
                                       std::move(batch), head, &changed);
    if (!s.ok()) return s;
  } else {
    absl::MutexLock lock(&mu_);
    OriginTable* t = FindOrCreate(info, source, generation);
    SC_RETURN_IF_ERROR(CheckDelta(*t, info.device_id, generation, batch));
    t->ApplyDelta(std::move(batch), up_to_seq, hub_ ? &changed : nullptr);
    if (head != nullptr) t->set_head(*head);
  }
  Share(info.device_id);
  if (hub_) hub_->PublishEntries(info.device_id, /*is_local=*/false, changed);
  return absl::OkStatus();
}

absl::Status PeerCache::ApplyRelayedDelta(const OriginInfo& info,
                                          uint64_t generation,
                                          uint64_t up_to_seq,
                                          std::vector<Entry> batch,
                                          const SignedHead* head,
                                          std::vector<Entry>* changed) {
  const Uuid& origin = info.device_id;
  if (head == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("relayed deltas of origin ", origin.ToString(),
                     " without the origin's signed head"));
  }
  // Check a changed copy without the lock: hashing can take milliseconds,
  // and lookups must not wait for it.
  std::optional<OriginTable> candidate;
  OriginEntries base;  // held so its address stays unique
  {
    absl::MutexLock lock(&mu_);
    OriginTable* t = FindOrCreate(info, InfoSource::kRelay, generation);
    absl::Status s = CheckDelta(*t, origin, generation, batch);
    if (!s.ok()) return s;
    candidate.emplace(*t);
    base = t->entries();
  }
  candidate->ApplyDelta(std::move(batch), up_to_seq, hub_ ? changed : nullptr);
  SC_RETURN_IF_ERROR(CheckAgainstHead(origin, *head, &*candidate));
  absl::MutexLock lock(&mu_);
  auto it = origins_.find(origin);
  if (it == origins_.end() || !it->second->entries().SameAs(base) ||
      it->second->generation() != generation) {
    return absl::AbortedError(
        absl::StrCat("origin ", origin.ToString(),
                     " changed while relayed deltas were checked"));
  }
  it->second->AdoptState(std::move(*candidate));
  return absl::OkStatus();
}

absl::Status PeerCache::ReplaceRemote(const OriginInfo& info, InfoSource source,
                                      uint64_t generation, uint64_t max_seq,
                                      uint64_t floor_seq,
                                      std::vector<Entry> entries,
                                      const SignedHead* head) {
  const Uuid& origin = info.device_id;
  if (origin == self_id_) return absl::OkStatus();
  if (entries.size() > max_entries_per_origin_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "snapshot of origin ", origin.ToString(), " has ", entries.size(),
        " entries; at most ", max_entries_per_origin_, " are kept per device"));
  }
  if (source == InfoSource::kRelay && head == nullptr) {
    return absl::PermissionDeniedError(
        absl::StrCat("relayed snapshot of origin ", origin.ToString(),
                     " without the origin's signed head"));
  }
  absl::MutexLock share(&share_mu_);
  // Snapshots usually arrive in key order already; sorting is the fallback
  // for custom variants whose ids differ between processes.
  if (!std::is_sorted(
          entries.begin(), entries.end(),
          [](const Entry& a, const Entry& b) { return KeyLess(a, b); })) {
    OriginTable::SortAndDedupe(&entries);
  }
  // Whether the snapshot may replace what is cached (checked again after a
  // relay's snapshot was hashed, without the lock). OK and false: we
  // already know more.
  auto may_replace = [&](const OriginTable& t) -> absl::StatusOr<bool> {
    if (t.generation() > generation) {
      return absl::FailedPreconditionError(absl::StrCat(
          "snapshot of origin ", origin.ToString(), " generation ", generation,
          " is older than the cached generation ", t.generation()));
    }
    return !(t.generation() == generation && t.max_seq() > max_seq);
  };
  OriginTable candidate(info, generation);
  candidate.Replace(generation, max_seq, floor_seq, std::move(entries));
  if (source == InfoSource::kRelay) {
    {
      absl::MutexLock lock(&mu_);
      absl::StatusOr<bool> ok =
          may_replace(*FindOrCreate(info, source, generation));
      if (!ok.ok() || !*ok) return ok.status();
    }
    absl::Status s = CheckAgainstHead(origin, *head, &candidate);
    if (!s.ok()) return s;
  } else if (head != nullptr) {
    candidate.set_head(*head);
  }
  {
    absl::MutexLock lock(&mu_);
    OriginTable* t = FindOrCreate(info, source, generation);
    absl::StatusOr<bool> ok = may_replace(*t);
    if (!ok.ok() || !*ok) return ok.status();
    // A relay's same-generation snapshot may lack the signature: keep ours.
    if (t->generation() != generation || !info.generation_signature.empty()) {
      t->set_generation_signature(info.generation_signature);
    }
    t->AdoptState(std::move(candidate));
  }
  Share(origin);
  // Receiving a large snapshot leaves many freed message buffers in malloc's
  // arenas; hand them back so the process's footprint is the cache itself.
  malloc_trim(0);
  if (hub_) {
    v1::AvailabilityEvent ev;
    ev.set_type(v1::AvailabilityEvent::TYPE_RESET);
    ev.set_device_id(origin.ToString());
    hub_->Publish(ev);
  }
  return absl::OkStatus();
}

void PeerCache::DropOrigin(const Uuid& origin) {
  if (origin == self_id_) return;
  {
    absl::MutexLock share(&share_mu_);
    std::shared_ptr<const HolderTable> base;
    HolderTable::Slot slot = 0;
    {
      absl::MutexLock lock(&mu_);
      auto it = origins_.find(origin);
      if (it == origins_.end()) return;
      slot = it->second->slot();
      origins_.erase(it);
      base = shared_;
    }
    // Its column is emptied before the slot is handed out again.
    auto next = std::make_shared<const HolderTable>(base->WithOrigin(slot, {}));
    absl::MutexLock lock(&mu_);
    Repoint(std::move(next));
    free_slots_.push_back(slot);
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
    AddRemote(info);
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
                       Found* found) {
  const size_t nv = views.size();
  found->views_ = nv;
  found->found_.assign(keys.size() * nv, nullptr);
  found->copies_.clear();
  std::vector<const Entry*> column(keys.size());
  std::vector<uint32_t> first(keys.size());
  const HolderTable* looked_up = nullptr;
  for (size_t v = 0; v < nv; ++v) {
    const OriginEntries& entries = views[v].entries;
    if (entries.empty()) continue;
    if (const EntrySet* array = entries.array()) {
      array->FindMany(keys, column.data());
      for (size_t i = 0; i < keys.size(); ++i) {
        const Entry* e = column[i];
        if (e != nullptr && !e->removed()) found->found_[i * nv + v] = e;
      }
      continue;
    }
    // Columns of one shared table: each key's rows are found once for all.
    const HolderTable& table = *entries.table();
    if (&table != looked_up) {
      table.FirstRows(keys, first.data());
      looked_up = &table;
    }
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!keys[i] || first[i] >= table.rows()) continue;
      std::optional<Entry> e =
          table.FindFrom(entries.slot(), *keys[i], first[i]);
      if (e && !e->removed()) {
        found->found_[i * nv + v] = &found->copies_.emplace_back(*e);
      }
    }
  }
}

size_t PeerCache::TotalEntries() const {
  absl::ReaderMutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, t] : origins_) n += t->entry_count();
  return n;
}

size_t PeerCache::RemoteEntries(const std::optional<Uuid>& except) const {
  absl::ReaderMutexLock lock(&mu_);
  size_t n = 0;
  for (const auto& [id, t] : origins_) {
    if (id != self_id_ && id != except) n += t->entry_count();
  }
  return n;
}

}  // namespace sidecar::availability
