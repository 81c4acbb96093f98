#include "services/availability/origin_table.h"

#include <algorithm>

namespace sidecar::availability {

OriginTable::OriginTable(OriginInfo info, uint64_t generation)
    : info_(std::move(info)), generation_(generation) {}

void OriginTable::UpdateInfo(const OriginInfo& info) {
  if (!info.peer_address.empty()) info_.peer_address = info.peer_address;
  if (!info.transfer_address.empty()) {
    info_.transfer_address = info.transfer_address;
  }
  if (!info.name.empty()) info_.name = info.name;
}

void OriginTable::FillInfo(const OriginInfo& info) {
  if (info_.peer_address.empty()) info_.peer_address = info.peer_address;
  if (info_.transfer_address.empty()) {
    info_.transfer_address = info.transfer_address;
  }
  if (info_.name.empty()) info_.name = info.name;
}

void OriginTable::AdoptState(OriginTable&& other) {
  generation_ = other.generation_;
  max_seq_ = other.max_seq_;
  floor_seq_ = other.floor_seq_;
  live_count_ = other.live_count_;
  entries_ = std::move(other.entries_);
  head_ = std::move(other.head_);
  hasher_ = std::move(other.hasher_);
}

void OriginTable::SortAndDedupe(std::vector<Entry>* entries) {
  // Input already in key order, one entry per key (a snapshot from the
  // wire, or the own origin read from its snapshot file): one pass that
  // checks it beats a sort that confirms it.
  auto unordered = [](const Entry& a, const Entry& b) {
    return !KeyLess(a, b);
  };
  if (std::adjacent_find(entries->begin(), entries->end(), unordered) ==
      entries->end()) {
    return;
  }
  std::sort(entries->begin(), entries->end(),
            [](const Entry& a, const Entry& b) {
              if (KeyLess(a, b)) return true;
              if (KeyLess(b, a)) return false;
              return a.seq() > b.seq();  // newest first within a key
            });
  auto same_key = [](const Entry& a, const Entry& b) {
    return !KeyLess(a, b) && !KeyLess(b, a);
  };
  entries->erase(std::unique(entries->begin(), entries->end(), same_key),
                 entries->end());
}

bool OriginTable::Take(const Entry* old, const Entry& change,
                       std::vector<Entry>* changed) {
  if (old != nullptr && change.seq() <= old->seq()) return false;
  hasher_.Touch(change.content);
  const bool was_live = old != nullptr && !old->removed();
  const bool is_live = !change.removed();
  live_count_ += is_live;
  live_count_ -= was_live;
  const bool differs =
      was_live != is_live || (is_live && (old->size() != change.size() ||
                                          old->sha256 != change.sha256));
  if (differs && changed) changed->push_back(change);
  max_seq_ = std::max(max_seq_, change.seq());
  return true;
}

void OriginTable::ApplyDelta(std::vector<Entry> batch, uint64_t up_to_seq,
                             std::vector<Entry>* changed) {
  max_seq_ = std::max(max_seq_, up_to_seq);
  if (batch.empty()) return;
  SortAndDedupe(&batch);
  // In a column of the shared table, a few changes are looked up and
  // applied in one pass over its rows, without reading the column out.
  if (const auto& table = entries_.table();
      table != nullptr && batch.size() <= entries_.size() / 4 + 1024) {
    Entries winners;
    for (const Entry& b : batch) {
      std::optional<Entry> a = entries_.Find(EntryKey::Of(b));
      if (Take(a ? &*a : nullptr, b, changed)) winners.push_back(b);
    }
    if (!winners.empty()) {
      entries_ = OriginEntries(std::make_shared<const HolderTable>(
                                   table->WithChanges(slot_, winners)),
                               slot_);
    }
    return;
  }
  // A column is read into an array first: the merge walks it in order.
  const std::shared_ptr<const EntrySet> old_array = entries_.Array();
  const Entries& old = old_array->entries();
  Entries merged;
  merged.reserve(old.size() + batch.size());
  auto a = old.begin();
  auto b = batch.begin();
  while (a != old.end() || b != batch.end()) {
    if (b == batch.end() || (a != old.end() && KeyLess(*a, *b))) {
      merged.push_back(*a++);
      continue;
    }
    if (a == old.end() || KeyLess(*b, *a)) {  // new key
      Take(nullptr, *b, changed);
      merged.push_back(*b++);
      continue;
    }
    // Same key: the newer change wins.
    merged.push_back(Take(&*a, *b, changed) ? *b : *a);
    ++a;
    ++b;
  }
  entries_ = OriginEntries(std::make_shared<const EntrySet>(std::move(merged)));
}

void OriginTable::InstallCompacted(std::shared_ptr<const EntrySet> compacted,
                                   uint64_t floor) {
  entries_ = OriginEntries(std::move(compacted));
  floor_seq_ = std::max(floor_seq_, floor);
}

void OriginTable::Replace(uint64_t generation, uint64_t max_seq,
                          uint64_t floor_seq, Entries sorted) {
  generation_ = generation;
  max_seq_ = max_seq;
  floor_seq_ = floor_seq;
  live_count_ = 0;
  for (const Entry& e : sorted) live_count_ += !e.removed();
  entries_ = OriginEntries(std::make_shared<const EntrySet>(std::move(sorted)));
  hasher_.TouchAll();
}

std::vector<Entry> OriginTable::Since(const OriginEntries& entries,
                                      uint64_t since) {
  std::vector<Entry> out;
  entries.ForEach([&](const Entry& e) {
    if (e.seq() > since) out.push_back(e);
  });
  std::sort(out.begin(), out.end(),
            [](const Entry& a, const Entry& b) { return a.seq() < b.seq(); });
  return out;
}

}  // namespace sidecar::availability
