// The transfer service's PostgreSQL schema (the job queue), as versioned
// migrations. The transfer service needs a database of its own: migrations
// are recorded in `schema_migrations`, which another service's schema in the
// same database would share.
#ifndef SIDECAR_SERVICES_TRANSFER_JOB_MIGRATIONS_H_
#define SIDECAR_SERVICES_TRANSFER_JOB_MIGRATIONS_H_

#include <cstdint>

#include "absl/types/span.h"
#include "common/pg/migrate.h"

namespace sidecar::transfer {

// Key of the advisory lock held while migrating ("SDCXFER1"); distinct from
// the availability store's.
inline constexpr int64_t kJobMigrationLockKey = 0x5344435846455231;

// All migrations, sorted by version. Append only: never edit one that has
// shipped.
absl::Span<const pg::Migration> JobMigrations();

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_JOB_MIGRATIONS_H_
