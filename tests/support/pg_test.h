// A gtest fixture for tests against a real PostgreSQL: one private server
// per test suite (started once, restarted by a test that stopped it), and a
// fresh database per test, whose conninfo is conninfo_.
//
//   class StoreTest : public sidecar::testing::PgTest {};
//   TEST_F(StoreTest, X) { auto c = pg::Connection::Open(conninfo_); ... }
#ifndef SIDECAR_TESTS_SUPPORT_PG_TEST_H_
#define SIDECAR_TESTS_SUPPORT_PG_TEST_H_

#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/pg_server.h"

namespace sidecar::testing {

class PgTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    server_ = new PgServer();
    const absl::Time start = absl::Now();
    absl::Status s = server_->Start();
    ASSERT_TRUE(s.ok()) << s;
    std::cerr << "PostgreSQL started on port " << server_->port() << " in "
              << absl::FormatDuration(absl::Now() - start) << "\n";
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_TRUE(server_->Start().ok());  // in case a test left it stopped
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    absl::StatusOr<std::string> conninfo =
        server_->CreateDatabase(absl::StrCat("t_", info->name()));
    ASSERT_TRUE(conninfo.ok()) << conninfo.status();
    conninfo_ = *conninfo;
  }

  static inline PgServer* server_ = nullptr;
  std::string conninfo_;
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_PG_TEST_H_
