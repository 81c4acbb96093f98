// A private PostgreSQL 15 server for tests, in a fresh temporary directory.
//
//   PgServer pg;
//   ASSERT_OK(pg.Start());
//   absl::StatusOr<std::string> conninfo = pg.CreateDatabase("t1");
//
// Listens on 127.0.0.1 on a free port and on a unix socket in its data
// directory; trust authentication as user "postgres"; fsync and synchronous
// commit off (a crash may lose data; fine for tests). As root, the server
// runs as the "postgres" system user (via runuser), which owns the
// directory. Not thread-safe.
#ifndef SIDECAR_TESTS_SUPPORT_PG_SERVER_H_
#define SIDECAR_TESTS_SUPPORT_PG_SERVER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sidecar::testing {

struct PgServerOptions {
  std::string bin_dir = "/usr/lib/postgresql/15/bin";
  // Extra "-c name=value" settings for the server.
  std::vector<std::string> settings;
  absl::Duration start_timeout = absl::Seconds(60);
};

class PgServer {
 public:
  explicit PgServer(PgServerOptions options = {});
  // Stops the server (immediate shutdown) and removes its directory.
  ~PgServer();
  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;

  // First call: makes the directory, runs initdb, picks a free port and
  // starts the server (retrying with another port if it was taken). Later
  // calls start it again on the same directory and port. Returns when it
  // accepts connections. FAILED_PRECONDITION if the binaries or, as root,
  // the postgres user are missing (apt-get install postgresql-15);
  // the message includes the server's log on other failures.
  absl::Status Start();
  // Fast shutdown (disconnects clients, waits for exit). OK if not running.
  absl::Status Stop();
  // Stop() then Start(): the same data, port and conninfo strings.
  absl::Status Restart();

  // Creates database `name` (which must not exist) and returns its conninfo:
  // "host=127.0.0.1 port=P dbname=NAME user=postgres".
  absl::StatusOr<std::string> CreateDatabase(const std::string& name);
  // Conninfo of a database (which need not exist).
  std::string ConnInfo(const std::string& dbname) const;

  int port() const { return port_; }
  bool running() const { return running_; }
  const std::string& data_dir() const { return data_dir_; }
  // The server's log file (postgres writes it; read it on failures).
  const std::string& log_path() const { return log_path_; }

 private:
  absl::Status Init();
  absl::Status StartOnPort();
  // argv prefixed by "runuser -u postgres --" when running as root.
  std::vector<std::string> AsServerUser(std::vector<std::string> argv) const;

  const PgServerOptions options_;
  std::string root_dir_;  // temp dir holding data_dir_ and logs
  std::string data_dir_;
  std::string log_path_;
  int port_ = 0;
  bool running_ = false;
  bool as_root_ = false;
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_PG_SERVER_H_
