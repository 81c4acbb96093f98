#include "services/availability/migrations.h"

namespace sidecar::availability {
namespace {

// Key columns compare like SidecarKey: uuid bytewise, kind and format as
// numbers, variant bytewise (COLLATE "C"), so SQL order equals C++ order.
constexpr pg::Migration kMigrations[] = {
    {1, "initial schema", R"sql(
CREATE TABLE device_identity (
  singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  device_id uuid NOT NULL,
  generation bigint NOT NULL CHECK (generation > 0),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sidecars (
  content_uuid uuid NOT NULL,
  kind smallint NOT NULL,
  variant text COLLATE "C" NOT NULL,
  format smallint NOT NULL,
  size bigint NOT NULL CHECK (size >= 0),
  sha256 bytea CHECK (sha256 IS NULL OR length(sha256) = 32),
  status smallint NOT NULL,
  relative_path text NOT NULL,
  generator_version text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (content_uuid, kind, variant, format),
  CHECK (status <> 2 OR sha256 IS NOT NULL)
);
-- List(status = X) walks this in key order.
CREATE INDEX sidecars_status_key ON sidecars
  (status, content_uuid, kind, variant, format);

CREATE TABLE change_log (
  seq bigint PRIMARY KEY CHECK (seq > 0),
  content_uuid uuid NOT NULL,
  kind smallint NOT NULL,
  variant text COLLATE "C" NOT NULL,
  format smallint NOT NULL,
  removed boolean NOT NULL,
  size bigint NOT NULL DEFAULT 0,
  sha256 bytea CHECK (sha256 IS NULL OR length(sha256) = 32),
  at timestamptz NOT NULL DEFAULT now()
);
)sql"},
    {2, "library members", R"sql(
-- The library this device belongs to: one signed membership record per
-- device (sidecar.v1.MemberRecord, serialized), this device included.
CREATE TABLE library_members (
  device_id uuid PRIMARY KEY,
  record bytea NOT NULL,
  updated_at timestamptz NOT NULL DEFAULT now()
);
)sql"},
    {3, "provenance and last use of local sidecars", R"sql(
-- fetched: the transfer service fetched it from a peer (evictable under a
-- store quota); false: the application registered it (generated here).
-- Sidecars fetched before this column say so in their generator_version.
ALTER TABLE sidecars ADD COLUMN fetched boolean NOT NULL DEFAULT false;
UPDATE sidecars SET fetched = true WHERE generator_version LIKE 'fetched from %';
-- last_used: last registration or LOCAL answer of Resolve (recorded in
-- batches). Eviction walks fetched READY rows in this order.
ALTER TABLE sidecars ADD COLUMN last_used timestamptz NOT NULL DEFAULT now();
CREATE INDEX sidecars_lru ON sidecars (last_used)
  WHERE fetched AND status = 2;
CREATE INDEX sidecars_kind_lru ON sidecars (kind, last_used)
  WHERE fetched AND status = 2;
)sql"},
    {4, "generator versions in the change log", R"sql(
-- What is advertised now includes the generator version. Entries logged
-- before have none, so the log starts a new generation (as ResetChangeLog
-- does): peers then take a snapshot with the versions.
ALTER TABLE change_log ADD COLUMN generator_version text NOT NULL DEFAULT '';
UPDATE device_identity SET generation =
  greatest((extract(epoch FROM clock_timestamp()) * 1000000)::bigint,
           generation + 1)
WHERE EXISTS (SELECT 1 FROM change_log);
TRUNCATE change_log;
INSERT INTO change_log (seq, content_uuid, kind, variant, format, removed,
                        size, sha256, generator_version)
SELECT row_number() OVER (ORDER BY content_uuid, kind, variant, format),
       content_uuid, kind, variant, format, false, size, sha256,
       generator_version
FROM sidecars WHERE status = 2;
)sql"},
    {5, "change-log floor", R"sql(
-- Compaction deletes superseded change-log rows and tombstones older than
-- the retention; floor_seq is the highest seq of a dropped tombstone: a peer
-- that has not seen it needs a snapshot. A new generation resets it.
ALTER TABLE device_identity ADD COLUMN floor_seq bigint NOT NULL DEFAULT 0;
)sql"},
};

}  // namespace

absl::Span<const pg::Migration> Migrations() { return kMigrations; }

}  // namespace sidecar::availability
