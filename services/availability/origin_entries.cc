#include "services/availability/origin_entries.h"

namespace sidecar::availability {

std::optional<Entry> OriginEntries::Find(const EntryKey& key) const {
  if (!array_) return table_->Find(slot_, key);
  if (const Entry* e = array_->Find(key)) return *e;
  return std::nullopt;
}

std::shared_ptr<const EntrySet> OriginEntries::Array() const {
  if (array_) return array_;
  return std::make_shared<const EntrySet>(table_->EntriesOf(slot_));
}

}  // namespace sidecar::availability
