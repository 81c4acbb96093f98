// Versioned schema migrations kept in a `schema_migrations` table.
//
// Each migration runs once, in its own transaction together with the row
// that records it. A session advisory lock serializes processes that start
// at the same time against the same database: the second one waits, then
// finds the migrations applied and does nothing.
#ifndef SIDECAR_COMMON_PG_MIGRATE_H_
#define SIDECAR_COMMON_PG_MIGRATE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/pg/connection.h"

namespace sidecar::pg {

struct Migration {
  int version;  // 1, 2, 3...: strictly increasing, never reused
  absl::string_view name;
  absl::string_view sql;  // may hold several ';'-separated statements
};

// Applies the migrations of `migrations` whose version is not yet recorded,
// in order, holding pg_advisory_lock(`lock_key`) meanwhile. `migrations`
// must be sorted by version. FAILED_PRECONDITION if the database records a
// version this binary does not know (it was migrated by a newer binary).
// REQUIRES: `conn` not inside a transaction.
absl::Status ApplyMigrations(Connection& conn,
                             absl::Span<const Migration> migrations,
                             int64_t lock_key);

// The highest applied version, 0 if none (or no schema_migrations table).
absl::StatusOr<int> SchemaVersion(Connection& conn);

}  // namespace sidecar::pg

#endif  // SIDECAR_COMMON_PG_MIGRATE_H_
