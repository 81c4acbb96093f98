// OriginTable: everything known here about what one origin device advertises:
// its entries sorted by key (tombstones included, so deltas can be relayed),
// its generation, the highest change-log seq applied and the floor below
// which deltas can no longer be served.
//
// It also keeps the origin's latest signed head (state_hash.h) and what is
// needed to recompute the digest of its state cheaply after small changes.
//
// Entries live in immutable OriginEntries: readers (gossip senders,
// lookups) take a copy and need no lock while they read; writers build a
// new array and swap it in. A change leaves the table with an array of its
// own; PeerCache may then move it into the HolderTable that remote origins
// share (ShareInto). Not thread-safe itself; PeerCache serializes.
#ifndef SIDECAR_SERVICES_AVAILABILITY_ORIGIN_TABLE_H_
#define SIDECAR_SERVICES_AVAILABILITY_ORIGIN_TABLE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "services/availability/entry_set.h"
#include "services/availability/origin_entries.h"
#include "services/availability/state_hash.h"

namespace sidecar::availability {

// How to reach an origin; travels with its entries.
struct OriginInfo {
  Uuid device_id;
  std::string peer_address;
  std::string transfer_address;
  std::string name;
  // The origin's Ed25519 signature over GenerationStatement(device_id,
  // generation): proof that the origin itself started this generation, so
  // that relays can pass a new generation on but never invent one.
  std::string generation_signature;
};

class OriginTable {
 public:
  OriginTable(OriginInfo info, uint64_t generation);

  const OriginInfo& info() const { return info_; }
  // Keeps non-empty fields of `info` (addresses change; ids do not). Not
  // the generation signature, which only Replace changes.
  void UpdateInfo(const OriginInfo& info);
  // Fills only the fields still empty: for what a third device relays.
  void FillInfo(const OriginInfo& info);
  void set_generation_signature(std::string sig) {
    info_.generation_signature = std::move(sig);
  }

  uint64_t generation() const { return generation_; }
  uint64_t max_seq() const { return max_seq_; }
  uint64_t floor_seq() const { return floor_seq_; }
  uint64_t live_count() const { return live_count_; }
  size_t entry_count() const { return entries_.size(); }
  const OriginEntries& entries() const { return entries_; }

  // The slot of this origin's column in the shared HolderTable (PeerCache
  // assigns it to remote origins).
  HolderTable::Slot slot() const { return slot_; }
  void set_slot(HolderTable::Slot slot) { slot_ = slot; }
  // Reads the entries from column slot() of `table` from now on.
  // REQUIRES: that column holds exactly this table's entries.
  void ShareInto(std::shared_ptr<const HolderTable> table) {
    entries_ = OriginEntries(std::move(table), slot_);
  }

  // The origin's signed head if it describes this table's state (the same
  // generation and max_seq), else nullptr.
  const SignedHead* head() const {
    return head_.generation == generation_ && head_.max_seq == max_seq_ &&
                   !head_.signature.empty()
               ? &head_
               : nullptr;
  }
  // Keeps `head` as the origin's latest; head() shows it once the table
  // reaches its generation and max_seq.
  void set_head(SignedHead head) { head_ = std::move(head); }
  // The digest of the table's live entries (StateHashOf), recomputing only
  // what changed since the last call.
  Sha256Digest ComputeStateHash() {
    return hasher_.Compute(entries_.Array()->entries());
  }
  // For ComputeStateHash without the caller's lock (StateHasher::Fork).
  StateHasher ForkHasher() { return hasher_.Fork(); }
  void AdoptHasher(const StateHasher& computed) { hasher_.Adopt(computed); }
  // Takes the entries, counters, head and hasher of `other`, a copy of this
  // table that was changed and verified; keeps this table's info.
  void AdoptState(OriginTable&& other);

  // The entry for `key` (live or tombstone), if any.
  std::optional<Entry> Find(const EntryKey& key) const {
    return entries_.Find(key);
  }

  // Merges `batch` (any order; several entries per key allowed) into the
  // table: per key the highest seq wins, and an entry older than what is
  // here is ignored. max_seq becomes max(max_seq, up_to_seq). Appends to
  // `changed` (if not null) the entries that changed what is advertised.
  void ApplyDelta(std::vector<Entry> batch, uint64_t up_to_seq,
                  std::vector<Entry>* changed);

  // Installs `compacted`, the entries of this table without tombstones of
  // seq <= floor, and raises the floor to `floor`: a peer that has not seen
  // the floor then gets a snapshot. The live entries, and so the digest and
  // the signed head, stay as they were.
  void InstallCompacted(std::shared_ptr<const EntrySet> compacted,
                        uint64_t floor);

  // Replaces everything with `sorted` (sorted by KeyLess, one entry per key).
  void Replace(uint64_t generation, uint64_t max_seq, uint64_t floor_seq,
               Entries sorted);

  // Entries of `entries` with seq > since, in ascending seq order.
  static std::vector<Entry> Since(const OriginEntries& entries, uint64_t since);

  // Sorts by key and keeps one entry per key (the highest seq).
  static void SortAndDedupe(std::vector<Entry>* entries);

 private:
  // Whether `change` replaces `old` (null: the key is new): it does if it is
  // newer. If so, counts it (live entries, digest, max_seq) and appends it
  // to `changed` (if not null) when it changes what is advertised.
  bool Take(const Entry* old, const Entry& change, std::vector<Entry>* changed);

  OriginInfo info_;
  uint64_t generation_;
  uint64_t max_seq_ = 0;
  uint64_t floor_seq_ = 0;
  uint64_t live_count_ = 0;
  OriginEntries entries_;
  HolderTable::Slot slot_ = 0;
  SignedHead head_;
  StateHasher hasher_;  // touched by every change to entries_
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_ORIGIN_TABLE_H_
