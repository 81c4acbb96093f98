#include "common/pg/migrate.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace sidecar::pg {
namespace {

constexpr absl::string_view kCreateTable =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY,"
    " name text NOT NULL,"
    " applied_at timestamptz NOT NULL DEFAULT now())";

absl::Status ApplyLocked(Connection& conn,
                         absl::Span<const Migration> migrations) {
  if (auto r = conn.Exec(kCreateTable); !r.ok()) return r.status();
  absl::StatusOr<int> current = SchemaVersion(conn);
  if (!current.ok()) return current.status();
  int known = migrations.empty() ? 0 : migrations.back().version;
  if (*current > known) {
    return absl::FailedPreconditionError(
        absl::StrCat("database schema is at version ", *current,
                     " but this binary knows only up to ", known,
                     "; run a newer binary or use a fresh database"));
  }
  for (const Migration& m : migrations) {
    if (m.version <= *current) continue;
    absl::Status s = conn.Exec("BEGIN").status();
    if (s.ok()) {
      s = conn.Exec(m.sql).status();
      if (!s.ok()) {
        s = absl::Status(s.code(), absl::StrCat("migration ", m.version, " (",
                                                m.name, "): ", s.message()));
      }
    }
    if (s.ok()) {
      s = conn.ExecParams(
                  "INSERT INTO schema_migrations (version, name) "
                  "VALUES ($1, $2)",
                  {std::to_string(m.version), std::string(m.name)})
              .status();
    }
    if (s.ok()) s = conn.Exec("COMMIT").status();
    if (!s.ok()) {
      if (!conn.broken()) (void)conn.Exec("ROLLBACK");
      return s;
    }
    SC_LOG(INFO) << "applied schema migration " << m.version << " (" << m.name
                 << ")";
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> SchemaVersion(Connection& conn) {
  absl::StatusOr<Result> r = conn.Exec(
      "SELECT CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0"
      " ELSE (SELECT coalesce(max(version), 0) FROM schema_migrations) END");
  if (!r.ok()) return r.status();
  absl::StatusOr<int64_t> v = r->GetInt64(0, 0);
  if (!v.ok()) return v.status();
  return static_cast<int>(*v);
}

absl::Status ApplyMigrations(Connection& conn,
                             absl::Span<const Migration> migrations,
                             int64_t lock_key) {
  for (size_t i = 1; i < migrations.size(); ++i) {
    if (migrations[i].version <= migrations[i - 1].version) {
      return absl::InternalError("migrations are not sorted by version");
    }
  }
  std::string key = std::to_string(lock_key);
  if (auto r = conn.ExecParams("SELECT pg_advisory_lock($1::bigint)", {key});
      !r.ok()) {
    return r.status();
  }
  absl::Status s = ApplyLocked(conn, migrations);
  // If the connection dropped, the server released the lock with it.
  if (!conn.broken()) {
    absl::Status u =
        conn.ExecParams("SELECT pg_advisory_unlock($1::bigint)", {key})
            .status();
    if (s.ok()) s = u;
  }
  return s;
}

}  // namespace sidecar::pg
