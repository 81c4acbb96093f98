// SelfSnapshot: the own origin (every entry this device advertises, with its
// generation, max seq and floor) saved to a file of the state directory, so
// that a start reads it in a fraction of a second and then loads from the
// change log only the rows logged after it, instead of copying every row out
// of PostgreSQL (about a second per million).
//
// The file is a cache of the database, never the truth: a reader checks it
// (magic, format version, sizes, CRC-32C over every byte, names and entry
// fields) and the caller checks that it matches the database (device id,
// generation, the row at its max seq); anything else is an error and the
// caller loads from the database as if there were no file.
//
// Layout (host byte order; a host of the other order sees a wrong magic):
//   header (kHeaderBytes): magic, format version, device id, generation,
//     max seq, floor seq, change-log rows, entry count, name counts and the
//     byte length of the names;
//   names: for every variant, then every generator version, the entries
//     use: its id in the writing process (u16), its length (u16), its bytes;
//   entries: entry count x 64-byte Entry, sorted by KeyLess, one per key;
//   CRC-32C (u32) of everything before it.
// Entries name variants and generator versions by process-local dictionary
// ids; the reader interns the names anew and rewrites the ids.
#ifndef SIDECAR_SERVICES_AVAILABILITY_SELF_SNAPSHOT_H_
#define SIDECAR_SERVICES_AVAILABILITY_SELF_SNAPSHOT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/uuid.h"
#include "services/availability/entry_set.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/string_dict.h"

namespace sidecar::availability {

// The file's name in the state directory.
inline constexpr char kSelfSnapshotFile[] = "own_origin.snapshot";

// The most entries a snapshot holds (what peers accept of one origin);
// larger own origins are loaded from the database only.
inline constexpr uint64_t kMaxSnapshotEntries = kMaxEntriesPerOrigin;

// What the snapshot says of the own origin besides its entries.
struct SelfSnapshotInfo {
  Uuid device_id;
  uint64_t generation = 0;
  uint64_t max_seq = 0;
  uint64_t floor_seq = 0;
  // Change-log rows, superseded ones included, when it was taken.
  uint64_t log_rows = 0;

  bool operator==(const SelfSnapshotInfo&) const = default;
};

struct SelfSnapshot {
  SelfSnapshotInfo info;
  Entries entries;  // sorted by KeyLess, one per key
};

// Writes `entries` (sorted by KeyLess, one per key, as an EntrySet holds
// them) and `info` to `path`: to `path`.tmp, fsynced, renamed over `path`,
// and the directory fsynced, so that `path` is always a whole snapshot, the
// old or the new one. Names of ids are taken from `variants` and `versions`.
// INVALID_ARGUMENT for more than kMaxSnapshotEntries entries or an entry
// seq above info.max_seq; the error of the failing call for I/O errors
// (the temporary file is removed). Not safe to call concurrently for one
// path.
absl::Status WriteSelfSnapshot(const std::string& path,
                               const SelfSnapshotInfo& info,
                               absl::Span<const Entry> entries,
                               const StringDict& variants,
                               const StringDict& versions);
// As above, with the process-wide dictionaries.
absl::Status WriteSelfSnapshot(const std::string& path,
                               const SelfSnapshotInfo& info,
                               absl::Span<const Entry> entries);

// Reads the snapshot in `path`, interning its names in `variants` and
// `versions` and rewriting the entries' ids to theirs (re-sorting if that
// changed the order). NOT_FOUND if there is no file; DATA_LOSS, saying
// what is wrong, for a file that is not a whole, valid snapshot of this
// format (truncated, corrupt, foreign, absurd counts); another error if
// the file cannot be read or a dictionary is full. Never trusts a count
// before checking it against the file's size.
absl::StatusOr<SelfSnapshot> ReadSelfSnapshot(const std::string& path,
                                              StringDict* variants,
                                              StringDict* versions);
// As above, with the process-wide dictionaries.
absl::StatusOr<SelfSnapshot> ReadSelfSnapshot(const std::string& path);

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_SELF_SNAPSHOT_H_
