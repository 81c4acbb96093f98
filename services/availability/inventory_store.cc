#include "services/availability/inventory_store.h"

#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/pg/connection.h"
#include "common/pg/migrate.h"
#include "common/request_limits.h"
#include "common/status_macros.h"
#include "services/availability/migrations.h"

namespace sidecar::availability {
namespace {

// How long one call keeps retrying after losing the connection.
constexpr absl::Duration kRetryTimeout = absl::Seconds(5);

constexpr char kNowMicros[] =
    "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint";

constexpr char kRecordColumns[] =
    "content_uuid, kind, variant, format, size, sha256, status, "
    "generator_version, (extract(epoch FROM created_at) * 1000000)::bigint, "
    "(extract(epoch FROM updated_at) * 1000000)::bigint, fetched, "
    "(extract(epoch FROM last_used) * 1000000)::bigint";

constexpr char kUpsertSql[] = R"sql(
INSERT INTO sidecars AS s (content_uuid, kind, variant, format, size, sha256,
                           status, relative_path, generator_version,
                           fetched)
SELECT t.u, t.k, t.v, t.f, t.sz, decode(t.h, 'hex'), t.st, t.p, t.g, t.fe
FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::smallint[],
            $5::bigint[], $6::text[], $7::smallint[], $8::text[], $9::text[],
            $10::bool[])
     AS t(u, k, v, f, sz, h, st, p, g, fe)
ON CONFLICT (content_uuid, kind, variant, format) DO UPDATE SET
  size = EXCLUDED.size, sha256 = EXCLUDED.sha256, status = EXCLUDED.status,
  relative_path = EXCLUDED.relative_path,
  generator_version = EXCLUDED.generator_version, fetched = EXCLUDED.fetched,
  updated_at = now(), last_used = now())sql";

// Only moves forward: a late flush never makes a sidecar look older.
constexpr char kTouchSql[] = R"sql(
UPDATE sidecars s SET last_used = greatest(s.last_used, $5::timestamptz)
FROM unnest($1::uuid[], $2::smallint[], $3::text[], $4::smallint[])
     AS t(u, k, v, f)
WHERE s.content_uuid = t.u AND s.kind = t.k AND s.variant = t.v
  AND s.format = t.f)sql";

constexpr char kUsageSql[] = R"sql(
SELECT kind, fetched, count(*), coalesce(sum(size), 0)::bigint
FROM sidecars WHERE status = 2 GROUP BY kind, fetched ORDER BY kind)sql";

std::string EvictableSql(bool kind) {
  return absl::StrCat(
      "SELECT ", kRecordColumns, " FROM sidecars WHERE fetched AND status = 2",
      kind ? " AND kind = $2" : "", " ORDER BY last_used LIMIT $1");
}

constexpr char kDeleteSql[] = R"sql(
DELETE FROM sidecars s
USING unnest($1::uuid[], $2::smallint[], $3::text[], $4::smallint[])
      AS t(u, k, v, f)
WHERE s.content_uuid = t.u AND s.kind = t.k AND s.variant = t.v
  AND s.format = t.f)sql";

constexpr char kAppendChangesSql[] = R"sql(
INSERT INTO change_log (seq, content_uuid, kind, variant, format, removed,
                        size, sha256, generator_version)
SELECT t.q, t.u, t.k, t.v, t.f, t.r, t.sz, decode(t.h, 'hex'), t.g
FROM unnest($1::bigint[], $2::uuid[], $3::smallint[], $4::text[],
            $5::smallint[], $6::bool[], $7::bigint[], $8::text[], $9::text[])
     AS t(q, u, k, v, f, r, sz, h, g))sql";

// Every change-log row, in table order: no sort in the server (a key's
// rows are deduplicated by the caller, newest seq first; compaction keeps
// them few).
constexpr char kLoadAdvertisedSql[] =
    "SELECT seq, content_uuid, kind, variant, format, removed, size, sha256, "
    "generator_version FROM change_log";

// kLoadAdvertisedSql restricted by seq (the primary key's index), e.g.
// " WHERE seq > 42". COPY takes no parameters: the number is formatted in.
std::string LoadAdvertisedSql(absl::string_view op, uint64_t seq) {
  return absl::StrCat(kLoadAdvertisedSql, " WHERE seq ", op, " ", seq);
}

// The rows after `seq`. The upper bound changes no result: it makes the
// condition a range, which a table without statistics yet (a log just
// filled) estimates at 0.5% of its rows rather than a third, so the
// planner reads the index instead of the whole table (0.4 s at 6M rows
// to return none).
std::string LoadAdvertisedAfterSql(uint64_t seq) {
  return absl::StrCat(LoadAdvertisedSql(">", seq),
                      " AND seq <= ", std::numeric_limits<int64_t>::max());
}

constexpr char kResetIdentitySql[] =
    "UPDATE device_identity SET floor_seq = 0, generation = "
    "greatest((extract(epoch FROM clock_timestamp()) * 1000000)::bigint, "
    "generation + 1) RETURNING device_id, generation";

// Rows of a seq range that are not kept (see CompactRange).
constexpr char kCompactRangeSql[] =
    "DELETE FROM change_log WHERE seq >= $1 AND seq < $2 "
    "AND seq <> ALL($3::bigint[])";

constexpr char kRewriteLogSql[] = R"sql(
INSERT INTO change_log (seq, content_uuid, kind, variant, format, removed,
                        size, sha256, generator_version)
SELECT row_number() OVER (ORDER BY content_uuid, kind, variant, format),
       content_uuid, kind, variant, format, false, size, sha256,
       generator_version
FROM sidecars WHERE status = 2)sql";

std::string ListSql(bool after, bool status) {
  std::string sql = absl::StrCat("SELECT ", kRecordColumns, " FROM sidecars");
  // With a status the (status, key...) index serves both the filter and the
  // keyset condition; the leading status keeps the row comparison indexable.
  if (status && after) {
    absl::StrAppend(&sql,
                    " WHERE status = $2 AND (status, content_uuid, kind, "
                    "variant, format) > ($2, $3, $4, $5, $6)");
  } else if (status) {
    absl::StrAppend(&sql, " WHERE status = $2");
  } else if (after) {
    absl::StrAppend(&sql,
                    " WHERE (content_uuid, kind, variant, format) > "
                    "($2, $3, $4, $5)");
  }
  absl::StrAppend(&sql,
                  " ORDER BY content_uuid, kind, variant, format LIMIT $1");
  return sql;
}

// Parses the columns of kRecordColumns starting at `col`.
absl::StatusOr<SidecarKey> KeyFromRow(const pg::Result& r, int row, int col) {
  SidecarKey key;
  absl::StatusOr<Uuid> uuid = Uuid::Parse(r.Get(row, col));
  if (!uuid.ok()) return uuid.status();
  key.content = *uuid;
  absl::StatusOr<int64_t> kind = r.GetInt64(row, col + 1);
  if (!kind.ok()) return kind.status();
  key.kind = static_cast<Kind>(*kind);
  key.variant = std::string(r.Get(row, col + 2));
  absl::StatusOr<int64_t> format = r.GetInt64(row, col + 3);
  if (!format.ok()) return format.status();
  key.format = static_cast<Format>(*format);
  return key;
}

absl::StatusOr<Sha256Digest> DigestFromBytea(absl::string_view text) {
  if (text.size() != 66 || text.substr(0, 2) != "\\x") {
    return absl::InternalError("sha256 column is not 32 bytes in hex format");
  }
  return DigestFromHex(text.substr(2));
}

absl::StatusOr<LocalRecord> RecordFromRow(const pg::Result& r, int row) {
  LocalRecord rec;
  absl::StatusOr<SidecarKey> key = KeyFromRow(r, row, 0);
  if (!key.ok()) return key.status();
  rec.key = std::move(*key);
  absl::StatusOr<int64_t> size = r.GetInt64(row, 4);
  if (!size.ok()) return size.status();
  rec.size = static_cast<uint64_t>(*size);
  if (!r.IsNull(row, 5)) {
    absl::StatusOr<Sha256Digest> d = DigestFromBytea(r.Get(row, 5));
    if (!d.ok()) return d.status();
    rec.sha256 = *d;
  }
  absl::StatusOr<int64_t> status = r.GetInt64(row, 6);
  if (!status.ok()) return status.status();
  rec.status = static_cast<v1::SidecarStatus>(*status);
  rec.generator_version = std::string(r.Get(row, 7));
  absl::StatusOr<int64_t> created = r.GetInt64(row, 8);
  if (!created.ok()) return created.status();
  absl::StatusOr<int64_t> updated = r.GetInt64(row, 9);
  if (!updated.ok()) return updated.status();
  rec.created_at = absl::FromUnixMicros(*created);
  rec.updated_at = absl::FromUnixMicros(*updated);
  rec.fetched = r.Get(row, 10) == "t";
  absl::StatusOr<int64_t> used = r.GetInt64(row, 11);
  if (!used.ok()) return used.status();
  rec.last_used = absl::FromUnixMicros(*used);
  return rec;
}

// Big-endian integers of PostgreSQL's binary format.
template <typename T>
bool BinaryInt(const std::optional<absl::string_view>& field, T* out) {
  if (!field.has_value() || field->size() != sizeof(T)) return false;
  using U = std::make_unsigned_t<T>;
  U v = 0;
  for (char ch : *field) v = static_cast<U>(v << 8 | uint8_t(ch));
  *out = static_cast<T>(v);
  return true;
}

// One row of kLoadAdvertisedSql in binary format into `c`.
absl::Status ChangeFromBinaryRow(
    absl::Span<const std::optional<absl::string_view>> f, ChangeRecord* c) {
  int64_t seq, size;
  int16_t kind, format;
  if (f.size() != 9 || !BinaryInt(f[0], &seq) || !f[1] || f[1]->size() != 16 ||
      !BinaryInt(f[2], &kind) || !f[3] || !BinaryInt(f[4], &format) || !f[5] ||
      f[5]->size() != 1 || !BinaryInt(f[6], &size) ||
      (f[7] && f[7]->size() != 32) || !f[8]) {
    return absl::InternalError("malformed change-log row");
  }
  c->seq = static_cast<uint64_t>(seq);
  std::memcpy(c->key.content.bytes.data(), f[1]->data(), 16);
  c->key.kind = static_cast<Kind>(kind);
  c->key.variant.assign(f[3]->data(), f[3]->size());
  c->key.format = static_cast<Format>(format);
  c->removed = (*f[5])[0] != 0;
  c->size = static_cast<uint64_t>(size);
  if (f[7]) {
    std::memcpy(c->sha256.data(), f[7]->data(), 32);
  } else {
    c->sha256 = {};
  }
  c->generator_version.assign(f[8]->data(), f[8]->size());
  return absl::OkStatus();
}

absl::Status ValidateKey(const SidecarKey& key, const char* what,
                         size_t index) {
  absl::Status s = ValidateKindFormat(key.kind, key.format);
  if (s.ok()) s = ValidateVariant(key.variant);
  if (s.ok()) return s;
  return absl::InvalidArgumentError(
      absl::StrCat(what, "[", index, "]: ", s.message()));
}

constexpr uint64_t kMaxBigint =
    static_cast<uint64_t>(std::numeric_limits<int64_t>::max());

// Parameters of one Apply, built once and reused by every retry.
struct ApplyParams {
  pg::Params upserts;  // empty if none
  pg::Params removes;
  pg::Params changes;
  uint32_t upsert_count = 0;
  uint32_t remove_count = 0;
};

absl::StatusOr<ApplyParams> BuildApplyParams(
    absl::Span<const LocalRecord> upserts, absl::Span<const SidecarKey> removes,
    absl::Span<const ChangeRecord> changes) {
  ApplyParams out;
  // A key upserted twice keeps its last record (ON CONFLICT may not touch a
  // row twice in one statement).
  absl::flat_hash_set<SidecarKey> seen;
  std::vector<const LocalRecord*> unique;
  unique.reserve(upserts.size());
  for (size_t i = upserts.size(); i-- > 0;) {
    const LocalRecord& rec = upserts[i];
    SC_RETURN_IF_ERROR(ValidateKey(rec.key, "upserts", i));
    if (rec.status == v1::SIDECAR_STATUS_UNSPECIFIED ||
        !v1::SidecarStatus_IsValid(rec.status)) {
      return absl::InvalidArgumentError(
          absl::StrCat("upserts[", i, "]: status ", rec.status,
                       " is not pending, ready or failed"));
    }
    if (rec.status == v1::SIDECAR_STATUS_READY && !rec.sha256.has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("upserts[", i, "] (", KeyDebugString(rec.key),
                       "): a READY sidecar needs its sha256"));
    }
    if (rec.size > kMaxBigint) {
      return absl::InvalidArgumentError(
          absl::StrCat("upserts[", i, "]: size ", rec.size, " is too large"));
    }
    if (seen.insert(rec.key).second) unique.push_back(&rec);
  }
  if (!unique.empty()) {
    pg::ArrayBuilder u, k, v, f, sz, h, st, p, g, fe;
    for (auto it = unique.rbegin(); it != unique.rend(); ++it) {
      const LocalRecord& rec = **it;
      u.Add(rec.key.content.ToString());
      k.AddInt(rec.key.kind);
      v.Add(rec.key.variant);
      f.AddInt(rec.key.format);
      sz.AddInt(static_cast<int64_t>(rec.size));
      if (rec.sha256.has_value()) {
        h.Add(DigestToHex(*rec.sha256));
      } else {
        h.AddNull();
      }
      st.AddInt(rec.status);
      p.Add(RelativePath(rec.key));
      g.Add(rec.generator_version);
      fe.AddBool(rec.fetched);
    }
    out.upserts = {u.Finish(),  k.Finish(), v.Finish(),  f.Finish(),
                   sz.Finish(), h.Finish(), st.Finish(), p.Finish(),
                   g.Finish(),  fe.Finish()};
    out.upsert_count = static_cast<uint32_t>(unique.size());
  }

  seen.clear();
  pg::ArrayBuilder ru, rk, rv, rf;
  for (size_t i = 0; i < removes.size(); ++i) {
    const SidecarKey& key = removes[i];
    SC_RETURN_IF_ERROR(ValidateKey(key, "removes", i));
    if (!seen.insert(key).second) continue;
    ru.Add(key.content.ToString());
    rk.AddInt(key.kind);
    rv.Add(key.variant);
    rf.AddInt(key.format);
  }
  out.remove_count = static_cast<uint32_t>(seen.size());
  if (out.remove_count > 0) {
    out.removes = {ru.Finish(), rk.Finish(), rv.Finish(), rf.Finish()};
  }

  if (!changes.empty()) {
    pg::ArrayBuilder q, u, k, v, f, r, sz, h, g;
    for (size_t i = 0; i < changes.size(); ++i) {
      const ChangeRecord& c = changes[i];
      SC_RETURN_IF_ERROR(ValidateKey(c.key, "changes", i));
      if (c.seq == 0 || c.seq > kMaxBigint || c.size > kMaxBigint) {
        return absl::InvalidArgumentError(
            absl::StrCat("changes[", i, "]: seq must be 1..2^63-1 (is ", c.seq,
                         ") and size below 2^63"));
      }
      q.AddInt(static_cast<int64_t>(c.seq));
      u.Add(c.key.content.ToString());
      k.AddInt(c.key.kind);
      v.Add(c.key.variant);
      f.AddInt(c.key.format);
      r.AddBool(c.removed);
      sz.AddInt(static_cast<int64_t>(c.size));
      if (c.removed) {
        h.AddNull();
      } else {
        h.Add(DigestToHex(c.sha256));
      }
      g.Add(c.generator_version);
    }
    out.changes = {q.Finish(), u.Finish(),  k.Finish(), v.Finish(), f.Finish(),
                   r.Finish(), sz.Finish(), h.Finish(), g.Finish()};
  }
  return out;
}

class PgInventoryStore final : public InventoryStore {
 public:
  PgInventoryStore(std::string conninfo, std::unique_ptr<pg::Connection> conn,
                   DeviceIdentity identity)
      : conninfo_(std::move(conninfo)),
        conn_(std::move(conn)),
        identity_(identity) {}

  DeviceIdentity identity() const override {
    absl::MutexLock lock(&identity_mu_);
    return identity_;
  }

  absl::Status LoadAdvertised(
      const std::function<void(const ChangeRecord&)>& fn) override {
    return CopyChanges(kLoadAdvertisedSql, fn);
  }
  absl::Status LoadAdvertisedAfter(
      uint64_t after_seq,
      const std::function<void(const ChangeRecord&)>& fn) override {
    if (after_seq == 0) return LoadAdvertised(fn);
    return CopyChanges(LoadAdvertisedAfterSql(after_seq), fn);
  }
  absl::StatusOr<std::optional<ChangeRecord>> ChangeAt(uint64_t seq) override;
  absl::StatusOr<uint64_t> MaxSeq() override;
  absl::StatusOr<uint64_t> FloorSeq() override;
  absl::StatusOr<uint64_t> SeqLoggedBefore(absl::Time t) override;
  absl::StatusOr<uint64_t> CompactRange(uint64_t from, uint64_t to,
                                        absl::Span<const uint64_t> keep,
                                        uint64_t floor) override;
  absl::Status VacuumChangeLog() override;
  absl::StatusOr<ApplyResult> Apply(
      absl::Span<const LocalRecord> upserts,
      absl::Span<const SidecarKey> removes,
      absl::Span<const ChangeRecord> changes) override;
  absl::StatusOr<std::vector<LocalRecord>> List(
      const std::optional<SidecarKey>& after, uint32_t limit,
      std::optional<v1::SidecarStatus> status) override;
  absl::StatusOr<std::optional<LocalRecord>> Get(
      const SidecarKey& key) override;
  absl::Status TouchUsed(absl::Span<const SidecarKey> keys,
                         absl::Time at) override;
  absl::StatusOr<std::vector<KindUsage>> Usage() override;
  absl::StatusOr<std::vector<LocalRecord>> ListEvictable(
      std::optional<Kind> kind, uint32_t limit) override;
  absl::StatusOr<DeviceIdentity> ResetChangeLog() override;
  absl::StatusOr<std::vector<std::string>> LoadMembers() override;
  absl::Status SaveMember(const Uuid& device,
                          const std::string& record) override;

 private:
  // Streams the change-log rows `sql` (columns of kLoadAdvertisedSql)
  // selects to `fn`, in binary form.
  absl::Status CopyChanges(const std::string& sql,
                           const std::function<void(const ChangeRecord&)>& fn)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Runs one query that returns a single bigint.
  absl::StatusOr<uint64_t> QueryUint(const std::string& name,
                                     const pg::Params& params)
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::string conninfo_;  // for VacuumChangeLog's own connection
  // Held for every use of the connection (one statement at a time).
  absl::Mutex mu_;
  const std::unique_ptr<pg::Connection> conn_ ABSL_PT_GUARDED_BY(mu_);
  // Not mu_: identity() must not wait for a transaction in progress.
  mutable absl::Mutex identity_mu_;
  DeviceIdentity identity_ ABSL_GUARDED_BY(identity_mu_);
};

absl::Status PgInventoryStore::CopyChanges(
    const std::string& sql,
    const std::function<void(const ChangeRecord&)>& fn) {
  absl::MutexLock lock(&mu_);
  bool delivered = false;
  return conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        // Once rows went to `fn`, a retry would deliver them twice.
        if (delivered) {
          return absl::UnavailableError(
              "lost the PostgreSQL connection while loading the change log; "
              "start again");
        }
        ChangeRecord c;  // reused: its strings keep their buffers
        return conn.CopyOutBinary(
            sql, [&](absl::Span<const std::optional<absl::string_view>> f) {
              SC_RETURN_IF_ERROR(ChangeFromBinaryRow(f, &c));
              delivered = true;
              fn(c);
              return absl::OkStatus();
            });
      });
}

absl::StatusOr<std::optional<ChangeRecord>> PgInventoryStore::ChangeAt(
    uint64_t seq) {
  std::optional<ChangeRecord> out;
  SC_RETURN_IF_ERROR(CopyChanges(LoadAdvertisedSql("=", seq),
                                 [&](const ChangeRecord& c) { out = c; }));
  return out;
}

absl::StatusOr<uint64_t> PgInventoryStore::QueryUint(const std::string& name,
                                                     const pg::Params& params) {
  absl::MutexLock lock(&mu_);
  uint64_t out = 0;
  absl::Status s = conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        absl::StatusOr<pg::Result> r = conn.ExecPrepared(name, params);
        if (!r.ok()) return r.status();
        absl::StatusOr<int64_t> v = r->GetInt64(0, 0);
        if (!v.ok()) return v.status();
        out = static_cast<uint64_t>(*v);
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<uint64_t> PgInventoryStore::MaxSeq() {
  return QueryUint("max_seq", {});
}

absl::StatusOr<uint64_t> PgInventoryStore::FloorSeq() {
  return QueryUint("floor_seq", {});
}

absl::StatusOr<uint64_t> PgInventoryStore::SeqLoggedBefore(absl::Time t) {
  return QueryUint(
      "seq_logged_before",
      {absl::FormatTime(absl::RFC3339_full, t, absl::UTCTimeZone())});
}

absl::StatusOr<uint64_t> PgInventoryStore::CompactRange(
    uint64_t from, uint64_t to, absl::Span<const uint64_t> keep,
    uint64_t floor) {
  pg::ArrayBuilder kept;
  kept.Reserve(keep.size() * 10);
  for (uint64_t seq : keep) kept.AddInt(static_cast<int64_t>(seq));
  const pg::Params params = {std::to_string(from), std::to_string(to),
                             kept.Finish()};
  absl::MutexLock lock(&mu_);
  uint64_t deleted = 0;
  absl::Status s = conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        // Not prepared: a custom plan sees the array as a constant, which
        // PostgreSQL hashes for <> ALL.
        absl::StatusOr<pg::Result> r =
            conn.ExecParams(kCompactRangeSql, params);
        if (!r.ok()) return r.status();
        deleted = r->affected_rows();
        return conn.ExecPrepared("raise_floor", {std::to_string(floor)})
            .status();
      });
  if (!s.ok()) return s;
  return deleted;
}

absl::Status PgInventoryStore::VacuumChangeLog() {
  pg::ConnectOptions options;
  options.connect_timeout = kRetryTimeout;
  options.application_name = "sidecar-availability-vacuum";
  absl::StatusOr<std::unique_ptr<pg::Connection>> conn =
      pg::Connection::Open(conninfo_, options);
  if (!conn.ok()) return conn.status();
  return (*conn)->Exec("VACUUM change_log").status();
}

absl::StatusOr<InventoryStore::ApplyResult> PgInventoryStore::Apply(
    absl::Span<const LocalRecord> upserts, absl::Span<const SidecarKey> removes,
    absl::Span<const ChangeRecord> changes) {
  absl::StatusOr<ApplyParams> params =
      BuildApplyParams(upserts, removes, changes);
  if (!params.ok()) return params.status();
  absl::MutexLock lock(&mu_);
  ApplyResult result;
  absl::Status s = conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int attempt) -> absl::Status {
        result = ApplyResult();
        if (!params->upserts.empty()) {
          absl::StatusOr<pg::Result> r =
              conn.ExecPrepared("upsert", params->upserts);
          if (!r.ok()) return r.status();
          result.upserted = static_cast<uint32_t>(r->affected_rows());
        }
        if (!params->removes.empty()) {
          absl::StatusOr<pg::Result> r =
              conn.ExecPrepared("delete", params->removes);
          if (!r.ok()) return r.status();
          result.removed = static_cast<uint32_t>(r->affected_rows());
          result.not_found = params->remove_count - result.removed;
        }
        if (!params->changes.empty()) {
          // A retry after a lost COMMIT may find this batch already logged
          // (the commit went through); the rows are then identical.
          absl::StatusOr<pg::Result> r = conn.ExecPrepared(
              attempt == 0 ? "append_changes" : "append_changes_retry",
              params->changes);
          if (!r.ok()) return r.status();
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return result;
}

absl::StatusOr<std::vector<LocalRecord>> PgInventoryStore::List(
    const std::optional<SidecarKey>& after, uint32_t limit,
    std::optional<v1::SidecarStatus> status) {
  std::string name =
      absl::StrCat("list", after ? "_after" : "", status ? "_status" : "");
  pg::Params params = {std::to_string(limit)};
  if (status) params.push_back(std::to_string(*status));
  if (after) {
    params.push_back(after->content.ToString());
    params.push_back(std::to_string(after->kind));
    params.push_back(after->variant);
    params.push_back(std::to_string(after->format));
  }
  absl::MutexLock lock(&mu_);
  return pg::QueryPrepared<LocalRecord>(*conn_, kRetryTimeout, name, params,
                                        RecordFromRow);
}

absl::StatusOr<std::optional<LocalRecord>> PgInventoryStore::Get(
    const SidecarKey& key) {
  pg::Params params = {key.content.ToString(), std::to_string(key.kind),
                       key.variant, std::to_string(key.format)};
  absl::MutexLock lock(&mu_);
  std::optional<LocalRecord> out;
  absl::Status s = conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        out.reset();
        absl::StatusOr<pg::Result> r = conn.ExecPrepared("get", params);
        if (!r.ok()) return r.status();
        if (r->rows() == 0) return absl::OkStatus();
        absl::StatusOr<LocalRecord> rec = RecordFromRow(*r, 0);
        if (!rec.ok()) return rec.status();
        out = std::move(*rec);
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::Status PgInventoryStore::TouchUsed(absl::Span<const SidecarKey> keys,
                                         absl::Time at) {
  if (keys.empty()) return absl::OkStatus();
  if (keys.size() > kMaxKeysPerRequest) {
    return absl::InvalidArgumentError(
        absl::StrCat(keys.size(), " keys to touch; at most ",
                     kMaxKeysPerRequest, " per call"));
  }
  pg::ArrayBuilder u, k, v, f;
  for (const SidecarKey& key : keys) {
    u.Add(key.content.ToString());
    k.AddInt(key.kind);
    v.Add(key.variant);
    f.AddInt(key.format);
  }
  pg::Params params = {
      u.Finish(), k.Finish(), v.Finish(), f.Finish(),
      absl::FormatTime(absl::RFC3339_full, at, absl::UTCTimeZone())};
  absl::MutexLock lock(&mu_);
  return conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        return conn.ExecPrepared("touch", params).status();
      });
}

absl::StatusOr<std::vector<KindUsage>> PgInventoryStore::Usage() {
  absl::MutexLock lock(&mu_);
  std::vector<KindUsage> out;
  absl::Status s = conn_->RunWithRetry(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        out.clear();
        absl::StatusOr<pg::Result> r = conn.ExecPrepared("usage", {});
        if (!r.ok()) return r.status();
        for (int row = 0; row < r->rows(); ++row) {
          absl::StatusOr<int64_t> kind = r->GetInt64(row, 0);
          absl::StatusOr<int64_t> count = r->GetInt64(row, 2);
          absl::StatusOr<int64_t> bytes = r->GetInt64(row, 3);
          if (!kind.ok()) return kind.status();
          if (!count.ok()) return count.status();
          if (!bytes.ok()) return bytes.status();
          if (out.empty() || out.back().kind != *kind) {
            out.push_back(KindUsage{static_cast<Kind>(*kind)});
          }
          if (r->Get(row, 1) == "t") {
            out.back().fetched_count = static_cast<uint64_t>(*count);
            out.back().fetched_bytes = static_cast<uint64_t>(*bytes);
          } else {
            out.back().own_count = static_cast<uint64_t>(*count);
            out.back().own_bytes = static_cast<uint64_t>(*bytes);
          }
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<LocalRecord>> PgInventoryStore::ListEvictable(
    std::optional<Kind> kind, uint32_t limit) {
  pg::Params params = {std::to_string(limit)};
  if (kind) params.push_back(std::to_string(*kind));
  absl::MutexLock lock(&mu_);
  return pg::QueryPrepared<LocalRecord>(*conn_, kRetryTimeout,
                                        kind ? "evictable_kind" : "evictable",
                                        params, RecordFromRow);
}

absl::StatusOr<DeviceIdentity> PgInventoryStore::ResetChangeLog() {
  absl::MutexLock lock(&mu_);
  DeviceIdentity next;
  absl::Status s = conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        absl::StatusOr<pg::Result> r = conn.Exec(kResetIdentitySql);
        if (!r.ok()) return r.status();
        if (r->rows() != 1) {
          return absl::InternalError("device_identity has no row");
        }
        absl::StatusOr<Uuid> id = Uuid::Parse(r->Get(0, 0));
        if (!id.ok()) return id.status();
        absl::StatusOr<int64_t> gen = r->GetInt64(0, 1);
        if (!gen.ok()) return gen.status();
        next.device_id = *id;
        next.generation = static_cast<uint64_t>(*gen);
        if (auto t = conn.Exec("TRUNCATE change_log"); !t.ok()) {
          return t.status();
        }
        return conn.Exec(kRewriteLogSql).status();
      });
  if (!s.ok()) return s;
  {
    absl::MutexLock identity_lock(&identity_mu_);
    identity_ = next;
  }
  SC_LOG(INFO) << "change log reset; generation " << next.generation;
  return next;
}

absl::StatusOr<std::vector<std::string>> PgInventoryStore::LoadMembers() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> out;
  absl::Status s = conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        out.clear();
        absl::StatusOr<pg::Result> r =
            conn.Exec("SELECT record FROM library_members");
        if (!r.ok()) return r.status();
        for (int i = 0; i < r->rows(); ++i) {
          absl::StatusOr<std::string> b = r->GetBytea(i, 0);
          if (!b.ok()) return b.status();
          out.push_back(std::move(*b));
        }
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

absl::Status PgInventoryStore::SaveMember(const Uuid& device,
                                          const std::string& record) {
  absl::MutexLock lock(&mu_);
  return conn_->RunTransaction(
      kRetryTimeout, [&](pg::Connection& conn, int) -> absl::Status {
        return conn
            .ExecParams(
                "INSERT INTO library_members (device_id, record) "
                "VALUES ($1::uuid, decode($2, 'hex')) ON CONFLICT (device_id) "
                "DO UPDATE SET record = EXCLUDED.record, updated_at = now()",
                {device.ToString(), absl::BytesToHexString(record)})
            .status();
      });
}

absl::StatusOr<DeviceIdentity> LoadIdentity(pg::Connection& conn,
                                            const std::optional<Uuid>& want) {
  DeviceIdentity out;
  absl::Status s = conn.RunTransaction(
      kRetryTimeout, [&](pg::Connection& c, int) -> absl::Status {
        out.replaced_device_id.reset();
        // Two processes starting at once both insert; one row wins.
        absl::StatusOr<pg::Result> r = c.ExecParams(
            absl::StrCat("INSERT INTO device_identity (device_id, generation) "
                         "VALUES ($1::uuid, ",
                         kNowMicros, ") ON CONFLICT (singleton) DO NOTHING"),
            {want.value_or(Uuid::Random()).ToString()});
        if (!r.ok()) return r.status();
        if (want.has_value()) {
          // Another id (from before the device had its key): adopt the
          // key's id in a new generation, rewriting the change log so that
          // peers take a snapshot under the new id.
          r = c.ExecParams(
              "SELECT device_id FROM device_identity WHERE device_id <> $1",
              {want->ToString()});
          if (!r.ok()) return r.status();
          if (r->rows() == 1) {
            absl::StatusOr<Uuid> old = Uuid::Parse(r->Get(0, 0));
            if (!old.ok()) return old.status();
            out.replaced_device_id = *old;
            r = c.ExecParams(
                absl::StrCat("UPDATE device_identity SET device_id = $1, "
                             "floor_seq = 0, generation = greatest(",
                             kNowMicros, ", generation + 1)"),
                {want->ToString()});
            if (!r.ok()) return r.status();
            if (auto t = c.Exec("TRUNCATE change_log"); !t.ok()) {
              return t.status();
            }
            if (auto w = c.Exec(kRewriteLogSql); !w.ok()) return w.status();
          }
        }
        r = c.Exec("SELECT device_id, generation FROM device_identity");
        if (!r.ok()) return r.status();
        if (r->rows() != 1) {
          return absl::InternalError("device_identity has no row");
        }
        absl::StatusOr<Uuid> id = Uuid::Parse(r->Get(0, 0));
        if (!id.ok()) return id.status();
        absl::StatusOr<int64_t> gen = r->GetInt64(0, 1);
        if (!gen.ok()) return gen.status();
        out.device_id = *id;
        out.generation = static_cast<uint64_t>(*gen);
        return absl::OkStatus();
      });
  if (!s.ok()) return s;
  return out;
}

pg::ConnectOptions ConnectOptionsFor(absl::Duration connect_timeout) {
  pg::ConnectOptions options;
  options.connect_timeout = connect_timeout;
  options.attempt_timeout = std::min(connect_timeout, absl::Seconds(5));
  options.application_name = "sidecar-availability";
  return options;
}

absl::Status PrepareStatements(pg::Connection& conn) {
  const std::pair<std::string, std::string> statements[] = {
      {"upsert", kUpsertSql},
      {"delete", kDeleteSql},
      {"append_changes", kAppendChangesSql},
      {"append_changes_retry",
       absl::StrCat(kAppendChangesSql, " ON CONFLICT (seq) DO NOTHING")},
      {"max_seq",
       "SELECT greatest((SELECT coalesce(max(seq), 0) FROM change_log), "
       "(SELECT floor_seq FROM device_identity))"},
      {"floor_seq", "SELECT floor_seq FROM device_identity"},
      {"seq_logged_before",
       "SELECT coalesce((SELECT seq FROM change_log WHERE at < $1 "
       "ORDER BY seq DESC LIMIT 1), 0)"},
      {"raise_floor",
       "UPDATE device_identity SET floor_seq = greatest(floor_seq, $1)"},
      {"get", absl::StrCat("SELECT ", kRecordColumns,
                           " FROM sidecars WHERE content_uuid = $1 AND "
                           "kind = $2 AND variant = $3 AND format = $4")},
      {"touch", kTouchSql},
      {"usage", kUsageSql},
      {"evictable", EvictableSql(false)},
      {"evictable_kind", EvictableSql(true)},
      {"list", ListSql(false, false)},
      {"list_after", ListSql(true, false)},
      {"list_status", ListSql(false, true)},
      {"list_after_status", ListSql(true, true)},
  };
  for (const auto& [name, sql] : statements) {
    SC_RETURN_IF_ERROR(conn.Prepare(name, sql));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::optional<Uuid>> InventoryStore::PairedDevice(
    const std::string& conninfo, absl::Duration connect_timeout) {
  absl::StatusOr<std::unique_ptr<pg::Connection>> conn =
      pg::Connection::Open(conninfo, ConnectOptionsFor(connect_timeout));
  if (!conn.ok()) return conn.status();
  absl::StatusOr<pg::Result> r = (*conn)->Exec(
      "SELECT to_regclass('library_members') IS NOT NULL AND "
      "to_regclass('device_identity') IS NOT NULL");
  if (!r.ok()) return r.status();
  if (r->Get(0, 0) != "t") return std::optional<Uuid>();
  // Its own record is there from the first start; another device's record
  // means it was paired.
  r = (*conn)->Exec(
      "SELECT i.device_id FROM device_identity i WHERE EXISTS "
      "(SELECT 1 FROM library_members m WHERE m.device_id <> i.device_id)");
  if (!r.ok()) return r.status();
  if (r->rows() != 1) return std::optional<Uuid>();
  absl::StatusOr<Uuid> id = Uuid::Parse(r->Get(0, 0));
  if (!id.ok()) return id.status();
  return std::optional<Uuid>(*id);
}

absl::StatusOr<std::unique_ptr<InventoryStore>> InventoryStore::Open(
    const std::string& conninfo, absl::Duration connect_timeout,
    std::optional<Uuid> device_id) {
  absl::StatusOr<std::unique_ptr<pg::Connection>> conn =
      pg::Connection::Open(conninfo, ConnectOptionsFor(connect_timeout));
  if (!conn.ok()) return conn.status();
  absl::Status s =
      (*conn)->RunWithRetry(connect_timeout, [](pg::Connection& c, int) {
        return pg::ApplyMigrations(c, Migrations(), kMigrationLockKey);
      });
  if (!s.ok()) return s;
  absl::StatusOr<DeviceIdentity> identity = LoadIdentity(**conn, device_id);
  if (!identity.ok()) return identity.status();
  s = (*conn)->RunWithRetry(connect_timeout, [](pg::Connection& c, int) {
    return PrepareStatements(c);
  });
  if (!s.ok()) return s;
  SC_LOG(INFO) << "inventory store open: device "
               << identity->device_id.ToString() << " generation "
               << identity->generation;
  return std::make_unique<PgInventoryStore>(conninfo, std::move(*conn),
                                            *identity);
}

}  // namespace sidecar::availability
