// The libpq layer (common/pg) against a real, private PostgreSQL server.
#include "absl/strings/str_cat.h"
#include "common/pg/connection.h"
#include "gtest/gtest.h"
#include "tests/support/pg_test.h"
#include "tests/support/process.h"

namespace sidecar::pg {
namespace {

class PgConnectionTest : public ::sidecar::testing::PgTest {
 protected:
  void SetUp() override {
    PgTest::SetUp();
    if (HasFatalFailure()) return;
    auto conn = Connection::Open(conninfo_);
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = std::move(*conn);
  }

  std::unique_ptr<Connection> conn_;
};

TEST_F(PgConnectionTest, ErrorsCarrySqlStateAndServerMessage) {
  ASSERT_TRUE(conn_->Exec("CREATE TABLE t (k int PRIMARY KEY)").ok());
  ASSERT_TRUE(conn_->Exec("INSERT INTO t VALUES (1)").ok());
  auto dup = conn_->Exec("INSERT INTO t VALUES (1)");
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(SqlState(dup.status()), "23505");
  EXPECT_NE(dup.status().message().find("duplicate key"), std::string::npos)
      << dup.status();
  EXPECT_FALSE(IsConnectionLoss(dup.status()));

  auto syntax = conn_->Exec("SELEC 1");
  EXPECT_EQ(SqlState(syntax.status()), "42601");
  EXPECT_EQ(syntax.status().code(), absl::StatusCode::kInternal);
  auto bad_value = conn_->ExecParams("SELECT $1::int", {"x"});
  EXPECT_EQ(bad_value.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CodeForSqlState("57P01"), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CodeForSqlState("08006"), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CodeForSqlState("40001"), absl::StatusCode::kAborted);
}

TEST_F(PgConnectionTest, ParamsNullsAndArraysRoundTrip) {
  auto r = conn_->ExecParams("SELECT $1::text IS NULL, $2::text",
                             {std::nullopt, "it's \"x\""});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(*r->GetBool(0, 0));
  EXPECT_EQ(r->Get(0, 1), "it's \"x\"");

  const std::vector<std::string> elements = {"a,b",  "{c}",  "d\"e", "f\\g",
                                             "NULL", " sp ", ""};
  ArrayBuilder b;
  for (const auto& e : elements) b.Add(e);
  b.AddNull();
  auto rows = conn_->ExecParams(
      "SELECT x, x IS NULL FROM unnest($1::text[]) WITH ORDINALITY AS u(x, n) "
      "ORDER BY n",
      {b.Finish()});
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->rows(), static_cast<int>(elements.size()) + 1);
  for (size_t i = 0; i < elements.size(); ++i) {
    EXPECT_EQ(rows->Get(i, 0), elements[i]) << i;
    EXPECT_FALSE(*rows->GetBool(i, 1));
  }
  EXPECT_TRUE(*rows->GetBool(elements.size(), 1));

  auto bytes = conn_->Exec("SELECT '\\x00ff10'::bytea");
  ASSERT_TRUE(bytes.ok());
  EXPECT_EQ(*bytes->GetBytea(0, 0), std::string("\x00\xff\x10", 3));
  auto n = conn_->Exec("SELECT 9223372036854775807::bigint");
  EXPECT_EQ(*n->GetInt64(0, 0), INT64_MAX);
}

TEST_F(PgConnectionTest, StreamsRowsAndStopsEarly) {
  int64_t sum = 0;
  int count = 0;
  absl::Status s =
      conn_->StreamParams("SELECT i FROM generate_series(1, $1::int) i",
                          {"100000"}, [&](const Result& r, int row) {
                            sum += *r.GetInt64(row, 0);
                            ++count;
                            return absl::OkStatus();
                          });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(count, 100000);
  EXPECT_EQ(sum, int64_t{100000} * 100001 / 2);

  count = 0;
  s = conn_->StreamParams("SELECT i FROM generate_series(1, 10000000) i", {},
                          [&](const Result&, int) {
                            return ++count == 10 ? absl::AbortedError("enough")
                                                 : absl::OkStatus();
                          });
  EXPECT_EQ(s.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(count, 10);
  // The connection is usable afterwards.
  EXPECT_TRUE(conn_->Exec("SELECT 1").ok());

  count = 0;
  s = conn_->StreamCursor("SELECT i FROM generate_series(1, 2500) i", {}, 1000,
                          [&](const Result&, int) {
                            ++count;
                            return absl::OkStatus();
                          });
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(count, 2500);
}

TEST_F(PgConnectionTest, TransactionRollsBackOnError) {
  ASSERT_TRUE(conn_->Exec("CREATE TABLE t (k int PRIMARY KEY)").ok());
  absl::Status s =
      conn_->RunTransaction(absl::Seconds(5), [](Connection& c, int) {
        if (auto r = c.Exec("INSERT INTO t VALUES (1)"); !r.ok()) {
          return r.status();
        }
        return absl::FailedPreconditionError("changed my mind");
      });
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  // An ignored statement error still aborts the transaction.
  s = conn_->RunTransaction(absl::Seconds(5), [](Connection& c, int) {
    (void)c.Exec("INSERT INTO t VALUES (2)");
    (void)c.Exec("SELEC");
    return absl::OkStatus();
  });
  EXPECT_FALSE(s.ok());
  auto count = conn_->Exec("SELECT count(*) FROM t");
  ASSERT_TRUE(count.ok());
  EXPECT_EQ(*count->GetInt64(0, 0), 0);
}

TEST_F(PgConnectionTest, ReconnectsAndRepreparesAfterRestart) {
  ASSERT_TRUE(conn_->Prepare("plus", "SELECT $1::int + 1").ok());
  EXPECT_EQ(conn_->Prepare("plus", "SELECT 2").code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(server_->Restart().ok());

  // A plain statement on the dead connection reports the loss...
  auto lost = conn_->ExecPrepared("plus", {"1"});
  ASSERT_FALSE(lost.ok());
  EXPECT_TRUE(IsConnectionLoss(lost.status())) << lost.status();
  EXPECT_TRUE(conn_->broken());
  // ...and the next one reconnects and finds the statement prepared again.
  auto r = conn_->ExecPrepared("plus", {"41"});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(*r->GetInt64(0, 0), 42);
  EXPECT_EQ(conn_->reconnects(), 1);

  // RunTransaction hides a restart completely.
  ASSERT_TRUE(server_->Restart().ok());
  int attempts = 0;
  absl::Status s =
      conn_->RunTransaction(absl::Seconds(5), [&](Connection& c, int attempt) {
        attempts = attempt + 1;
        return c.ExecPrepared("plus", {"1"}).status();
      });
  EXPECT_TRUE(s.ok()) << s;
  // Attempt 0 died at BEGIN; attempt 1 ran on the new connection.
  EXPECT_EQ(attempts, 2);
  EXPECT_EQ(conn_->reconnects(), 2);
}

TEST(PgConnectionOpenTest, UnreachableAndMalformed) {
  absl::StatusOr<testing::ClosedPort> closed = testing::ClosedPort::Reserve();
  ASSERT_TRUE(closed.ok()) << closed.status();
  const int port = closed->port();
  ConnectOptions options;
  options.connect_timeout = absl::Milliseconds(300);
  absl::Time start = absl::Now();
  auto conn = Connection::Open(
      absl::StrCat("host=127.0.0.1 port=", port, " dbname=x"), options);
  ASSERT_FALSE(conn.ok());
  EXPECT_TRUE(IsConnectionLoss(conn.status())) << conn.status();
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(250));
  auto bad = Connection::Open("host=x bogus_option=1", options);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument)
      << bad.status();
}

}  // namespace
}  // namespace sidecar::pg
