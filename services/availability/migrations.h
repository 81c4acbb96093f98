// The availability service's PostgreSQL schema, as versioned migrations.
#ifndef SIDECAR_SERVICES_AVAILABILITY_MIGRATIONS_H_
#define SIDECAR_SERVICES_AVAILABILITY_MIGRATIONS_H_

#include <cstdint>

#include "absl/types/span.h"
#include "common/pg/migrate.h"

namespace sidecar::availability {

// Key of the advisory lock held while migrating ("sidecar" "avail").
inline constexpr int64_t kMigrationLockKey = 0x5344434156414931;

// All migrations, sorted by version. Append only: never edit one that has
// shipped.
absl::Span<const pg::Migration> Migrations();

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_MIGRATIONS_H_
