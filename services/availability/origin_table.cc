#include "services/availability/origin_table.h"

#include <algorithm>

namespace sidecar::availability {

OriginTable::OriginTable(OriginInfo info, uint64_t generation)
    : info_(std::move(info)),
      generation_(generation),
      entries_(std::make_shared<const EntrySet>()) {}

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

const Entry* OriginTable::Find(const EntryKey& key) const {
  return entries_->Find(key);
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

void OriginTable::ApplyDelta(std::vector<Entry> batch, uint64_t up_to_seq,
                             std::vector<Entry>* changed) {
  max_seq_ = std::max(max_seq_, up_to_seq);
  if (batch.empty()) return;
  SortAndDedupe(&batch);
  const Entries& old = entries_->entries();
  Entries merged_entries;
  Entries* merged = &merged_entries;
  merged->reserve(old.size() + batch.size());
  auto a = old.begin();
  auto b = batch.begin();
  while (a != old.end() || b != batch.end()) {
    if (b == batch.end() || (a != old.end() && KeyLess(*a, *b))) {
      merged->push_back(*a++);
      continue;
    }
    if (a == old.end() || KeyLess(*b, *a)) {  // new key
      hasher_.Touch(b->content);
      if (!b->removed()) {
        ++live_count_;
        if (changed) changed->push_back(*b);
      }
      max_seq_ = std::max(max_seq_, b->seq());
      merged->push_back(*b++);
      continue;
    }
    // Same key: the newer change wins.
    if (b->seq() > a->seq()) {
      hasher_.Touch(b->content);
      bool was_live = !a->removed(), is_live = !b->removed();
      live_count_ += is_live;
      live_count_ -= was_live;
      bool differs =
          was_live != is_live ||
          (is_live && (a->size() != b->size() || a->sha256 != b->sha256));
      if (differs && changed) changed->push_back(*b);
      max_seq_ = std::max(max_seq_, b->seq());
      merged->push_back(*b);
    } else {
      merged->push_back(*a);
    }
    ++a;
    ++b;
  }
  entries_ = std::make_shared<const EntrySet>(std::move(merged_entries));
}

void OriginTable::InstallCompacted(std::shared_ptr<const EntrySet> compacted,
                                   uint64_t floor) {
  entries_ = std::move(compacted);
  floor_seq_ = std::max(floor_seq_, floor);
}

void OriginTable::Replace(uint64_t generation, uint64_t max_seq,
                          uint64_t floor_seq, Entries sorted) {
  generation_ = generation;
  max_seq_ = max_seq;
  floor_seq_ = floor_seq;
  live_count_ = 0;
  for (const Entry& e : sorted) live_count_ += !e.removed();
  entries_ = std::make_shared<const EntrySet>(std::move(sorted));
  hasher_.TouchAll();
}

std::vector<Entry> OriginTable::Since(const Entries& entries, uint64_t since) {
  std::vector<Entry> out;
  for (const Entry& e : entries) {
    if (e.seq() > since) out.push_back(e);
  }
  std::sort(out.begin(), out.end(),
            [](const Entry& a, const Entry& b) { return a.seq() < b.seq(); });
  return out;
}

}  // namespace sidecar::availability
