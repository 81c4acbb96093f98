// gtest fixtures for tests against a real PostgreSQL: one private server
// per test suite (server_), and either a fresh database per test (PgTest,
// conninfo_; the server is restarted if a test left it stopped) or a
// working directory per test for the processes it starts (ProcessTest).
//
//   class StoreTest : public sidecar::testing::PgTest {};
//   TEST_F(StoreTest, X) { auto c = pg::Connection::Open(conninfo_); ... }
#ifndef SIDECAR_TESTS_SUPPORT_PG_TEST_H_
#define SIDECAR_TESTS_SUPPORT_PG_TEST_H_

#include <stdlib.h>

#include <filesystem>
#include <iostream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "tests/support/pg_server.h"

namespace sidecar::testing {

// One private PostgreSQL server per test suite.
class PgServerTest : public ::testing::Test {
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

  static inline PgServer* server_ = nullptr;
};

// Plus a fresh database per test.
class PgTest : public PgServerTest {
 protected:
  void SetUp() override {
    ASSERT_NE(server_, nullptr);
    ASSERT_TRUE(server_->Start().ok());  // in case a test left it stopped
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    absl::StatusOr<std::string> conninfo =
        server_->CreateDatabase(absl::StrCat("t_", info->name()));
    ASSERT_TRUE(conninfo.ok()) << conninfo.status();
    conninfo_ = *conninfo;
  }

  std::string conninfo_;
};

// Plus a working directory per test (dir_) for the processes a test starts
// (their databases come from server_). It is deleted after a passing test
// and kept, with its logs, after a failing one. A subclass stops its
// processes in its TearDown before calling this one's.
class ProcessTest : public PgServerTest {
 protected:
  void SetUp() override {
    std::string t =
        (std::filesystem::temp_directory_path() / "sidecar-test-XXXXXX")
            .string();
    ASSERT_NE(::mkdtemp(t.data()), nullptr) << "mkdtemp " << t;
    dir_ = t;
  }
  void TearDown() override {
    if (HasFailure()) {
      std::cerr << "logs kept in " << dir_ << "\n";
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string dir_;
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_PG_TEST_H_
