// The change-log mark: the furthest (generation, seq) this device's change
// log has reached, kept in the state directory, outside the database.
//
// The database can go back in time under the device (a restored backup, a
// failover to a lagging replica). The mark does not go back with it, so a
// start that finds the database behind the mark knows at once that its log
// forked from what peers cached, and starts a new generation before handing
// out a single seq again. The mark is written after the database commits
// and may lag it (it is written about once a second, without fsync); a
// lagging mark only means a fork found later, by the peers' digests
// (ForkHealer), never a false alarm.
#ifndef SIDECAR_SERVICES_AVAILABILITY_LOG_MARK_H_
#define SIDECAR_SERVICES_AVAILABILITY_LOG_MARK_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace sidecar::availability {

inline constexpr char kLogMarkFile[] = "change_log_mark";

struct LogPosition {
  uint64_t generation = 0;
  uint64_t max_seq = 0;
};

// Whether `db` is behind `mark`: an older generation, or the same one with a
// lower seq.
inline bool IsBehind(const LogPosition& db, const LogPosition& mark) {
  return db.generation < mark.generation ||
         (db.generation == mark.generation && db.max_seq < mark.max_seq);
}

// The mark in `path`; nullopt if there is none. A malformed file is
// INVALID_ARGUMENT (the caller logs it and carries on as if there were none).
absl::StatusOr<std::optional<LogPosition>> ReadLogMark(const std::string& path);

// Replaces the mark in `path` (a temporary file renamed over it).
absl::Status WriteLogMark(const std::string& path, const LogPosition& mark);

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_LOG_MARK_H_
