// InventoryStore against a real, private PostgreSQL 15 server.
#include "services/availability/inventory_store.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <random>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/pg/connection.h"
#include "common/pg/migrate.h"
#include "gtest/gtest.h"
#include "services/availability/migrations.h"
#include "tests/support/pg_test.h"
#include "tests/support/process.h"

namespace sidecar::availability {
namespace {

constexpr absl::Duration kConnectTimeout = absl::Seconds(10);

Uuid UuidFor(uint64_t i) {
  Uuid u;
  for (int b = 0; b < 8; ++b)
    u.bytes[b] = static_cast<uint8_t>(i >> (56 - 8 * b));
  u.bytes[8] = 0x80;  // keep it a plausible v4-ish value; order is by bytes
  u.bytes[15] = static_cast<uint8_t>(i * 37);
  return u;
}

SidecarKey KeyFor(uint64_t i, std::string variant = "grid@2x",
                  Kind kind = v1::SIDECAR_KIND_THUMB,
                  Format format = v1::SIDECAR_FORMAT_WEBP) {
  return SidecarKey{UuidFor(i), kind, std::move(variant), format};
}

Sha256Digest DigestFor(uint64_t i) {
  return Sha256Of(absl::StrCat("content ", i));
}

LocalRecord Ready(const SidecarKey& key, uint64_t size) {
  LocalRecord r;
  r.key = key;
  r.size = size;
  r.sha256 = DigestFor(size);
  r.status = v1::SIDECAR_STATUS_READY;
  r.generator_version = "thumbgen 1.2";
  return r;
}

LocalRecord Pending(const SidecarKey& key) {
  LocalRecord r;
  r.key = key;
  r.status = v1::SIDECAR_STATUS_PENDING;
  return r;
}

ChangeRecord Advertise(uint64_t seq, const LocalRecord& rec) {
  return ChangeRecord{seq, rec.key, false, rec.size, *rec.sha256};
}

ChangeRecord Withdraw(uint64_t seq, const SidecarKey& key) {
  return ChangeRecord{seq, key, true, 0, {}};
}

// The latest change per key, as LocalInventory takes them.
std::map<SidecarKey, ChangeRecord> LoadAll(InventoryStore& store,
                                           uint64_t* rows = nullptr) {
  std::map<SidecarKey, ChangeRecord> out;
  uint64_t n = 0;
  absl::Status s = store.LoadAdvertised([&](const ChangeRecord& c) {
    ++n;
    auto [it, added] = out.emplace(c.key, c);
    if (!added && it->second.seq < c.seq) it->second = c;
  });
  EXPECT_TRUE(s.ok()) << s;
  if (rows != nullptr) *rows = n;
  return out;
}

class InventoryStoreTest : public ::sidecar::testing::PgTest {
 protected:
  std::unique_ptr<InventoryStore> OpenStore() {
    absl::StatusOr<std::unique_ptr<InventoryStore>> store =
        InventoryStore::Open(conninfo_, kConnectTimeout);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(*store) : nullptr;
  }
};

TEST_F(InventoryStoreTest, MigrationsRunOnceAndIdentityPersists) {
  DeviceIdentity first;
  {
    auto store = OpenStore();
    ASSERT_NE(store, nullptr);
    first = store->identity();
    EXPECT_FALSE(first.device_id.IsNil());
    // Generation is microseconds since the epoch at creation.
    int64_t now_us = absl::ToUnixMicros(absl::Now());
    EXPECT_GT(first.generation, static_cast<uint64_t>(now_us - 60'000'000));
    EXPECT_LE(first.generation, static_cast<uint64_t>(now_us + 1'000'000));
  }
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->identity().device_id, first.device_id);
  EXPECT_EQ(store->identity().generation, first.generation);

  auto conn = pg::Connection::Open(conninfo_);
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto count = (*conn)->Exec("SELECT count(*) FROM schema_migrations");
  ASSERT_TRUE(count.ok()) << count.status();
  EXPECT_EQ(*count->GetInt64(0, 0), static_cast<int64_t>(Migrations().size()));
  auto version = pg::SchemaVersion(**conn);
  ASSERT_TRUE(version.ok());
  EXPECT_EQ(*version, Migrations().back().version);
  auto ids = (*conn)->Exec("SELECT count(*) FROM device_identity");
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids->GetInt64(0, 0), 1);
}

TEST_F(InventoryStoreTest, ConcurrentOpensAgreeOnOneIdentity) {
  constexpr int kOpeners = 4;
  std::vector<absl::StatusOr<std::unique_ptr<InventoryStore>>> stores;
  for (int i = 0; i < kOpeners; ++i)
    stores.emplace_back(absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int i = 0; i < kOpeners; ++i) {
    threads.emplace_back([&, i] {
      stores[i] = InventoryStore::Open(conninfo_, kConnectTimeout);
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kOpeners; ++i) {
    ASSERT_TRUE(stores[i].ok()) << stores[i].status();
    EXPECT_EQ((*stores[i])->identity().device_id,
              (*stores[0])->identity().device_id);
    EXPECT_EQ((*stores[i])->identity().generation,
              (*stores[0])->identity().generation);
  }
}

TEST_F(InventoryStoreTest, NewerSchemaIsRefused) {
  ASSERT_NE(OpenStore(), nullptr);
  auto conn = pg::Connection::Open(conninfo_);
  ASSERT_TRUE(conn.ok());
  ASSERT_TRUE((*conn)
                  ->Exec("INSERT INTO schema_migrations (version, name) "
                         "VALUES (9999, 'from the future')")
                  .ok());
  auto store = InventoryStore::Open(conninfo_, kConnectTimeout);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("9999"), std::string::npos)
      << store.status();
}

TEST_F(InventoryStoreTest, ApplyUpsertsUpdatesRemovesAndLogs) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->MaxSeq(), 0u);

  LocalRecord a = Ready(KeyFor(1), 100);
  LocalRecord b = Ready(KeyFor(2, "icon@1x"), 200);
  LocalRecord c = Pending(KeyFor(3, "detail@2x"));
  auto r = store->Apply({a, b, c}, {}, {Advertise(1, a), Advertise(2, b)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->upserted, 3u);
  EXPECT_EQ(r->removed, 0u);
  EXPECT_EQ(*store->MaxSeq(), 2u);

  auto got = store->Get(a.key);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_TRUE(got->has_value());
  const LocalRecord ga = **got;  // a copy: `got` is reused below
  EXPECT_EQ(ga.key, a.key);
  EXPECT_EQ(ga.size, 100u);
  ASSERT_TRUE(ga.sha256.has_value());
  EXPECT_EQ(*ga.sha256, *a.sha256);
  EXPECT_EQ(ga.status, v1::SIDECAR_STATUS_READY);
  EXPECT_EQ(ga.generator_version, "thumbgen 1.2");
  EXPECT_LT(absl::AbsDuration(ga.created_at - absl::Now()), absl::Minutes(1));
  EXPECT_EQ(ga.created_at, ga.updated_at);
  auto gc = store->Get(c.key);
  ASSERT_TRUE(gc.ok() && gc->has_value());
  EXPECT_FALSE((*gc)->sha256.has_value());
  EXPECT_EQ((*gc)->status, v1::SIDECAR_STATUS_PENDING);

  // relative_path is stored as the layout computes it.
  auto conn = pg::Connection::Open(conninfo_);
  ASSERT_TRUE(conn.ok());
  auto path = (*conn)->ExecParams(
      "SELECT relative_path FROM sidecars WHERE content_uuid = $1",
      {a.key.content.ToString()});
  ASSERT_TRUE(path.ok()) << path.status();
  ASSERT_EQ(path->rows(), 1);
  EXPECT_EQ(path->Get(0, 0), RelativePath(a.key));

  // Update: everything but created_at changes. The pending one becomes
  // ready; an upsert repeated in one batch keeps its last record.
  absl::SleepFor(absl::Milliseconds(5));
  LocalRecord a2 = Ready(a.key, 150);
  a2.generator_version = "thumbgen 2.0";
  LocalRecord c2 = Ready(c.key, 300);
  r = store->Apply({a, a2, c2}, {}, {Advertise(3, a2), Advertise(4, c2)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->upserted, 2u);
  got = store->Get(a.key);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->size, 150u);
  EXPECT_EQ((*got)->generator_version, "thumbgen 2.0");
  EXPECT_EQ((*got)->created_at, ga.created_at);
  EXPECT_GT((*got)->updated_at, ga.updated_at);

  // Remove one that exists and one that never did.
  r = store->Apply({}, {b.key, KeyFor(99)}, {Withdraw(5, b.key)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->upserted, 0u);
  EXPECT_EQ(r->removed, 1u);
  EXPECT_EQ(r->not_found, 1u);
  got = store->Get(b.key);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_EQ(*store->MaxSeq(), 5u);

  auto log = (*conn)->Exec("SELECT count(*) FROM change_log");
  ASSERT_TRUE(log.ok());
  EXPECT_EQ(*log->GetInt64(0, 0), 5);
}

TEST_F(InventoryStoreTest, ApplyIsAllOrNothing) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  LocalRecord a = Ready(KeyFor(1), 10);
  ASSERT_TRUE(store->Apply({a}, {}, {Advertise(1, a)}).ok());

  // Seq 1 is taken: the whole batch, including its upsert, must roll back.
  LocalRecord b = Ready(KeyFor(2), 20);
  auto r = store->Apply({b}, {a.key}, {Advertise(1, b)});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kAlreadyExists) << r.status();
  EXPECT_EQ(pg::SqlState(r.status()), "23505");
  EXPECT_FALSE(store->Get(b.key)->has_value());
  EXPECT_TRUE(store->Get(a.key)->has_value());

  // Invalid input is refused before anything is sent.
  LocalRecord no_digest = Ready(KeyFor(3), 30);
  no_digest.sha256.reset();
  r = store->Apply({no_digest}, {}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  r = store->Apply({Ready(KeyFor(4, "../evil"), 1)}, {}, {});
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  // The store still works after the failures.
  r = store->Apply({b}, {}, {Advertise(2, b)});
  EXPECT_TRUE(r.ok()) << r.status();
}

TEST_F(InventoryStoreTest, ListPagesInKeyOrderWithStatusFilter) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  // Keys chosen to catch ordering mistakes: uuids differing in the first
  // and last bytes, byte-wise variant order ("B" < "a", "grid" < "grid@1x"),
  // quotes and commas that need escaping, several kinds and formats.
  std::vector<LocalRecord> records;
  const std::vector<std::string> variants = {"a",       "B",         "grid",
                                             "grid@1x", "x,y \"z\"", "w{}"};
  uint64_t n = 0;
  for (uint64_t u : {7u, 1u, 256u, 3u}) {
    for (const std::string& v : variants) {
      for (Kind k : {v1::SIDECAR_KIND_PROXY, v1::SIDECAR_KIND_THUMB}) {
        SidecarKey key = KeyFor(
            u, v, k, n % 2 ? v1::SIDECAR_FORMAT_MP4 : v1::SIDECAR_FORMAT_WEBP);
        records.push_back(n % 3 == 0 ? Pending(key) : Ready(key, n));
        ++n;
      }
    }
  }
  std::shuffle(records.begin(), records.end(), std::mt19937(42));
  auto applied = store->Apply(records, {}, {});
  ASSERT_TRUE(applied.ok()) << applied.status();

  auto page_all = [&](std::optional<v1::SidecarStatus> status) {
    std::vector<SidecarKey> out;
    std::optional<SidecarKey> after;
    for (int pages = 0; pages < 100; ++pages) {
      auto page = store->List(after, 7, status);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok() || page->empty()) break;
      EXPECT_LE(page->size(), 7u);
      for (const LocalRecord& r : *page) {
        if (status) {
          EXPECT_EQ(r.status, *status);
        }
        out.push_back(r.key);
      }
      after = page->back().key;
    }
    return out;
  };
  std::vector<SidecarKey> want_all, want_ready;
  for (const LocalRecord& r : records) {
    want_all.push_back(r.key);
    if (r.status == v1::SIDECAR_STATUS_READY) want_ready.push_back(r.key);
  }
  std::sort(want_all.begin(), want_all.end());
  std::sort(want_ready.begin(), want_ready.end());
  EXPECT_EQ(page_all(std::nullopt), want_all);
  EXPECT_EQ(page_all(v1::SIDECAR_STATUS_READY), want_ready);
  EXPECT_EQ(page_all(v1::SIDECAR_STATUS_FAILED).size(), 0u);

  auto first = store->List(std::nullopt, 3, std::nullopt);
  ASSERT_TRUE(first.ok());
  ASSERT_EQ(first->size(), 3u);
  EXPECT_EQ((*first)[0].key, want_all[0]);
  auto none = store->List(want_all.back(), 10, std::nullopt);
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST_F(InventoryStoreTest, LoadAdvertisedGivesLatestChangePerKey) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  LocalRecord a = Ready(KeyFor(1), 10);
  LocalRecord b = Ready(KeyFor(2), 20);
  LocalRecord a2 = Ready(a.key, 11);
  ASSERT_TRUE(
      store->Apply({a, b}, {}, {Advertise(1, a), Advertise(2, b)}).ok());
  ASSERT_TRUE(store->Apply({a2}, {}, {Advertise(3, a2)}).ok());
  ASSERT_TRUE(store->Apply({}, {b.key}, {Withdraw(4, b.key)}).ok());

  std::map<SidecarKey, ChangeRecord> got = LoadAll(*store);
  ASSERT_EQ(got.size(), 2u);
  const ChangeRecord& ca = got.at(a.key);
  EXPECT_EQ(ca.seq, 3u);
  EXPECT_FALSE(ca.removed);
  EXPECT_EQ(ca.size, 11u);
  EXPECT_EQ(ca.sha256, *a2.sha256);
  const ChangeRecord& cb = got.at(b.key);
  EXPECT_EQ(cb.seq, 4u);
  EXPECT_TRUE(cb.removed);
  EXPECT_EQ(cb.sha256, Sha256Digest{});
}

// What a start from a snapshot taken at seq 2 reads: the rows after it, and
// the row at it to check that the snapshot still describes this log.
TEST_F(InventoryStoreTest, LoadAdvertisedAfterAndChangeAt) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  LocalRecord a = Ready(KeyFor(1), 10);
  LocalRecord b = Ready(KeyFor(2), 20);
  LocalRecord a2 = Ready(a.key, 11);
  ASSERT_TRUE(
      store->Apply({a, b}, {}, {Advertise(1, a), Advertise(2, b)}).ok());
  ASSERT_TRUE(store->Apply({a2}, {}, {Advertise(3, a2)}).ok());
  ASSERT_TRUE(store->Apply({}, {b.key}, {Withdraw(4, b.key)}).ok());

  std::vector<uint64_t> seqs;
  ASSERT_TRUE(store
                  ->LoadAdvertisedAfter(
                      2, [&](const ChangeRecord& c) { seqs.push_back(c.seq); })
                  .ok());
  std::sort(seqs.begin(), seqs.end());
  EXPECT_EQ(seqs, (std::vector<uint64_t>{3, 4}));
  seqs.clear();
  ASSERT_TRUE(store
                  ->LoadAdvertisedAfter(
                      0, [&](const ChangeRecord& c) { seqs.push_back(c.seq); })
                  .ok());
  EXPECT_EQ(seqs.size(), 4u);
  seqs.clear();
  ASSERT_TRUE(store
                  ->LoadAdvertisedAfter(
                      4, [&](const ChangeRecord& c) { seqs.push_back(c.seq); })
                  .ok());
  EXPECT_TRUE(seqs.empty());

  absl::StatusOr<std::optional<ChangeRecord>> at2 = store->ChangeAt(2);
  ASSERT_TRUE(at2.ok()) << at2.status();
  ASSERT_TRUE(at2->has_value());
  EXPECT_EQ((*at2)->key, b.key);
  EXPECT_FALSE((*at2)->removed);
  EXPECT_EQ((*at2)->sha256, *b.sha256);
  absl::StatusOr<std::optional<ChangeRecord>> at4 = store->ChangeAt(4);
  ASSERT_TRUE(at4.ok() && at4->has_value());
  EXPECT_TRUE((*at4)->removed);
  absl::StatusOr<std::optional<ChangeRecord>> at9 = store->ChangeAt(9);
  ASSERT_TRUE(at9.ok()) << at9.status();
  EXPECT_FALSE(at9->has_value());
}

TEST_F(InventoryStoreTest, ResetChangeLogStartsNewGeneration) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  DeviceIdentity before = store->identity();
  LocalRecord a = Ready(KeyFor(5), 10);
  LocalRecord b = Ready(KeyFor(2), 20);
  LocalRecord p = Pending(KeyFor(3));
  ASSERT_TRUE(
      store
          ->Apply({a, b, p}, {KeyFor(9)},
                  {Advertise(10, a), Advertise(11, b), Withdraw(12, KeyFor(9))})
          .ok());
  auto reset = store->ResetChangeLog();
  ASSERT_TRUE(reset.ok()) << reset.status();
  EXPECT_EQ(reset->device_id, before.device_id);
  EXPECT_GT(reset->generation, before.generation);
  EXPECT_EQ(store->identity().generation, reset->generation);
  EXPECT_EQ(*store->MaxSeq(), 2u);  // one entry per READY sidecar

  std::map<SidecarKey, ChangeRecord> got = LoadAll(*store);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got.at(b.key).seq, 1u);  // key order: uuid 2 before uuid 5
  EXPECT_EQ(got.at(a.key).seq, 2u);
  EXPECT_FALSE(got.at(a.key).removed);
  EXPECT_EQ(got.at(a.key).sha256, *a.sha256);

  // Twice in a row still increases strictly, and the new generation is
  // what a reopen sees.
  auto again = store->ResetChangeLog();
  ASSERT_TRUE(again.ok());
  EXPECT_GT(again->generation, reset->generation);
  store.reset();
  store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(store->identity().generation, again->generation);
}

TEST_F(InventoryStoreTest, SurvivesServerRestart) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  LocalRecord a = Ready(KeyFor(1), 10);
  ASSERT_TRUE(store->Apply({a}, {}, {Advertise(1, a)}).ok());

  absl::Status s = server_->Restart();
  ASSERT_TRUE(s.ok()) << s;

  // The old connection is dead; Apply reconnects, re-prepares and retries.
  LocalRecord b = Ready(KeyFor(2), 20);
  auto r = store->Apply({b}, {}, {Advertise(2, b)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->upserted, 1u);
  EXPECT_EQ(*store->MaxSeq(), 2u);

  // Reads too, after another restart.
  ASSERT_TRUE(server_->Restart().ok());
  auto page = store->List(std::nullopt, 10, std::nullopt);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->size(), 2u);
  EXPECT_EQ(LoadAll(*store).size(), 2u);
}

TEST_F(InventoryStoreTest, UnavailableWhileServerIsDownThenRecovers) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  ASSERT_TRUE(server_->Stop().ok());
  absl::Time start = absl::Now();
  LocalRecord a = Ready(KeyFor(1), 10);
  auto r = store->Apply({a}, {}, {Advertise(1, a)});
  absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_NE(r.status().message().find("check that the server is running"),
            std::string::npos)
      << r.status();
  EXPECT_GE(took, absl::Seconds(4));   // it did retry for a while...
  EXPECT_LT(took, absl::Seconds(15));  // ...but bounded
  std::cerr << "Apply gave up after " << absl::FormatDuration(took) << ": "
            << r.status().message() << "\n";

  ASSERT_TRUE(server_->Start().ok());
  r = store->Apply({a}, {}, {Advertise(1, a)});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(store->Get(a.key)->has_value());
}

TEST_F(InventoryStoreTest, Apply10000RecordsIsFast) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  constexpr int kBatch = 10000;
  std::vector<LocalRecord> records;
  std::vector<ChangeRecord> changes;
  for (int i = 0; i < kBatch; ++i) {
    records.push_back(Ready(KeyFor(1000000 + i), 45000 + i));
    changes.push_back(Advertise(i + 1, records.back()));
  }
  absl::Time start = absl::Now();
  auto r = store->Apply(records, {}, changes);
  absl::Duration insert = absl::Now() - start;
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->upserted, static_cast<uint32_t>(kBatch));

  for (int i = 0; i < kBatch; ++i) {
    records[i].size += 1;
    changes[i].seq += kBatch;
  }
  start = absl::Now();
  r = store->Apply(records, {}, changes);
  absl::Duration update = absl::Now() - start;
  ASSERT_TRUE(r.ok()) << r.status();

  std::vector<SidecarKey> removes;
  for (int i = 0; i < kBatch; i += 2) removes.push_back(records[i].key);
  start = absl::Now();
  r = store->Apply({}, removes, {});
  absl::Duration remove = absl::Now() - start;
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->removed, static_cast<uint32_t>(kBatch / 2));

  std::cerr << "Apply of " << kBatch << ": insert "
            << absl::FormatDuration(insert) << ", update "
            << absl::FormatDuration(update) << ", remove " << kBatch / 2 << " "
            << absl::FormatDuration(remove) << "\n";
  // Generous bound for a shared, noisy machine; the target is well under 1s.
  EXPECT_LT(insert, absl::Seconds(5));
  EXPECT_LT(update, absl::Seconds(5));
}

// Set SIDECAR_LOAD_ROWS=1000000 for the full-size measurement.
TEST_F(InventoryStoreTest, LoadAdvertisedStreamsManyRows) {
  int rows = 100000;
  if (const char* env = getenv("SIDECAR_LOAD_ROWS")) rows = atoi(env);
  auto conn = pg::Connection::Open(conninfo_);
  ASSERT_TRUE(conn.ok());
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  // Fill the log server-side: `rows` keys, 10% with a later second change.
  auto fill = (*conn)->ExecParams(R"sql(
      INSERT INTO change_log (seq, content_uuid, kind, variant, format,
                              removed, size, sha256)
      SELECT i, md5(i::text)::uuid, 1, 'grid@2x', 1, false, i,
             sha256(i::text::bytea)
      FROM generate_series(1, $1::bigint) i
      UNION ALL
      SELECT $1::bigint + i, md5(i::text)::uuid, 1, 'grid@2x', 1, true, 0,
             NULL
      FROM generate_series(1, $1::bigint / 10) i)sql",
                                  {std::to_string(rows)});
  ASSERT_TRUE(fill.ok()) << fill.status();
  ASSERT_TRUE((*conn)->Exec("ANALYZE change_log").ok());

  absl::Time start = absl::Now();
  int64_t count = 0, removed = 0;
  absl::Status s = store->LoadAdvertised([&](const ChangeRecord& c) {
    ++count;
    if (c.removed) {
      ++removed;
      EXPECT_GT(c.seq, static_cast<uint64_t>(rows));
      EXPECT_EQ(c.sha256, Sha256Digest{});
    } else {
      EXPECT_EQ(c.size, c.seq);
      EXPECT_EQ(c.key.variant, "grid@2x");
    }
  });
  absl::Duration took = absl::Now() - start;
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(count, rows + rows / 10);  // every row, superseded ones too
  EXPECT_EQ(removed, rows / 10);
  std::cerr << "LoadAdvertised of " << rows + rows / 10 << " log rows (" << rows
            << " keys): " << absl::FormatDuration(took) << "\n";
}

TEST_F(InventoryStoreTest, CompactRangeKeepsListedRowsAndRaisesFloor) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  LocalRecord a = Ready(KeyFor(1), 10), b = Ready(KeyFor(2), 20);
  LocalRecord a2 = Ready(a.key, 11);
  ASSERT_TRUE(
      store->Apply({a, b}, {}, {Advertise(1, a), Advertise(2, b)}).ok());
  ASSERT_TRUE(store->Apply({a2}, {}, {Advertise(3, a2)}).ok());
  ASSERT_TRUE(store->Apply({}, {b.key}, {Withdraw(4, b.key)}).ok());
  // Seq 1 is superseded by 3; b's tombstone (4) is dropped with the floor.
  const uint64_t keep[] = {3};
  absl::StatusOr<uint64_t> deleted = store->CompactRange(1, 5, keep, 4);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 3u);
  uint64_t rows = 0;
  std::map<SidecarKey, ChangeRecord> got = LoadAll(*store, &rows);
  EXPECT_EQ(rows, 1u);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got.at(a.key).seq, 3u);
  EXPECT_EQ(*store->FloorSeq(), 4u);
  // The log's highest row is gone, but its seq is never handed out again.
  EXPECT_EQ(*store->MaxSeq(), 4u);
  ASSERT_TRUE(store->VacuumChangeLog().ok());

  // The floor survives a reopen; only a new generation resets it.
  store.reset();
  store = OpenStore();
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->FloorSeq(), 4u);
  EXPECT_TRUE(store->CompactRange(1, 2, {}, 2).ok());
  EXPECT_EQ(*store->FloorSeq(), 4u);  // never lowered
  ASSERT_TRUE(store->ResetChangeLog().ok());
  EXPECT_EQ(*store->FloorSeq(), 0u);
}

TEST_F(InventoryStoreTest, SeqLoggedBeforeFindsTheLastOlderRow) {
  auto store = OpenStore();
  ASSERT_NE(store, nullptr);
  LocalRecord a = Ready(KeyFor(1), 10);
  ASSERT_TRUE(store->Apply({a}, {}, {Advertise(1, a)}).ok());
  absl::SleepFor(absl::Milliseconds(20));
  const absl::Time between = absl::Now();
  absl::SleepFor(absl::Milliseconds(20));
  ASSERT_TRUE(store->Apply({}, {a.key}, {Withdraw(2, a.key)}).ok());
  EXPECT_EQ(*store->SeqLoggedBefore(between - absl::Hours(1)), 0u);
  EXPECT_EQ(*store->SeqLoggedBefore(between), 1u);
  EXPECT_EQ(*store->SeqLoggedBefore(absl::Now() + absl::Hours(1)), 2u);
}

TEST(InventoryStoreOpenTest, UnreachableServerIsUnavailableAfterTimeout) {
  absl::StatusOr<testing::ClosedPort> closed = testing::ClosedPort::Reserve();
  ASSERT_TRUE(closed.ok()) << closed.status();
  const int port = closed->port();
  absl::Time start = absl::Now();
  auto store = InventoryStore::Open(
      absl::StrCat("host=127.0.0.1 port=", port, " dbname=x user=postgres"),
      absl::Seconds(1));
  absl::Duration took = absl::Now() - start;
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kUnavailable)
      << store.status();
  EXPECT_NE(store.status().message().find(absl::StrCat(port)),
            std::string::npos)
      << store.status();
  EXPECT_GE(took, absl::Milliseconds(900));
  EXPECT_LT(took, absl::Seconds(5));

  auto bad =
      InventoryStore::Open("host=127.0.0.1 nonsense_key=1", absl::Seconds(1));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
      << bad.status();
}

}  // namespace
}  // namespace sidecar::availability
