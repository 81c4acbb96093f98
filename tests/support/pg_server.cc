#include "tests/support/pg_server.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <system_error>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/pg/connection.h"
#include "tests/support/process.h"

namespace sidecar::testing {
namespace {

constexpr char kServerUser[] = "postgres";
constexpr int kPortAttempts = 5;

std::string QuoteConninfoValue(absl::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  out += '\'';
  return out;
}

uintmax_t FileSize(const std::string& path) {
  std::error_code ec;
  uintmax_t n = std::filesystem::file_size(path, ec);
  return ec ? 0 : n;
}

}  // namespace

PgServer::PgServer(PgServerOptions options) : options_(std::move(options)) {}

PgServer::~PgServer() {
  if (running_) {
    // Immediate: the data directory is deleted anyway.
    (void)RunCommand(AsServerUser({options_.bin_dir + "/pg_ctl", "-D",
                                   data_dir_, "-m", "immediate", "-w", "stop"}),
                     {}, root_dir_ + "/pg_ctl.log", absl::Seconds(30),
                     root_dir_);
  }
  if (!root_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(root_dir_, ec);
  }
}

std::vector<std::string> PgServer::AsServerUser(
    std::vector<std::string> argv) const {
  if (!as_root_) return argv;
  std::vector<std::string> out = {"runuser", "-u", kServerUser, "--"};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::string PgServer::ConnInfo(const std::string& dbname) const {
  return absl::StrCat("host=127.0.0.1 port=", port_,
                      " dbname=", QuoteConninfoValue(dbname), " user=postgres");
}

absl::Status PgServer::Init() {
  const std::string initdb = options_.bin_dir + "/initdb";
  if (access(initdb.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat(initdb,
                     " not found: install PostgreSQL 15 (apt-get install -y "
                     "postgresql-15) or set PgServerOptions::bin_dir"));
  }
  as_root_ = geteuid() == 0;
  uid_t uid = 0;
  gid_t gid = 0;
  if (as_root_) {
    passwd* pw = getpwnam(kServerUser);
    if (pw == nullptr) {
      return absl::FailedPreconditionError(
          "running as root, but there is no \"postgres\" user to run the "
          "server as (PostgreSQL refuses root); apt-get install -y "
          "postgresql-15 creates it");
    }
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  const char* tmp = getenv("TMPDIR");
  std::string templ =
      absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/sidecar-pg-XXXXXX");
  if (mkdtemp(templ.data()) == nullptr) {
    return absl::InternalError(
        absl::StrCat("mkdtemp ", templ, ": ", strerror(errno)));
  }
  root_dir_ = templ;
  data_dir_ = root_dir_ + "/data";
  log_path_ = root_dir_ + "/postgres.log";
  if (as_root_ && chown(root_dir_.c_str(), uid, gid) != 0) {
    return absl::InternalError(
        absl::StrCat("chown ", root_dir_, ": ", strerror(errno)));
  }
  const std::string initdb_log = root_dir_ + "/initdb.log";
  absl::StatusOr<int> rc = RunCommand(
      AsServerUser({initdb, "-D", data_dir_, "-U", "postgres", "-A", "trust",
                    "-E", "UTF8", "--locale=C", "--no-sync"}),
      {}, initdb_log, options_.start_timeout, root_dir_);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) {
    return absl::InternalError(
        absl::StrCat("initdb exited with ", *rc, ":\n", ReadTail(initdb_log)));
  }
  return absl::OkStatus();
}

absl::Status PgServer::StartOnPort() {
  std::string opts = absl::StrCat(
      "-p ", port_, " -k ", data_dir_,
      " -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off"
      " -c full_page_writes=off");
  for (const std::string& s : options_.settings)
    absl::StrAppend(&opts, " -c ", s);
  uintmax_t log_start = FileSize(log_path_);
  absl::StatusOr<int> rc = RunCommand(
      AsServerUser(
          {options_.bin_dir + "/pg_ctl", "-D", data_dir_, "-l", log_path_, "-o",
           opts, "-w", "-t",
           std::to_string(absl::ToInt64Seconds(options_.start_timeout)),
           "start"}),
      {}, root_dir_ + "/pg_ctl.log", options_.start_timeout + absl::Seconds(5),
      root_dir_);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) {
    std::string log = ReadTail(log_path_, FileSize(log_path_) - log_start);
    absl::Status s = absl::InternalError(absl::StrCat(
        "pg_ctl start exited with ", *rc, " (port ", port_, "); server log:\n",
        log.substr(log.size() > 3000 ? log.size() - 3000 : 0),
        "\npg_ctl: ", ReadTail(root_dir_ + "/pg_ctl.log", 1000)));
    if (absl::StrContains(log, "Address already in use")) {
      return absl::AlreadyExistsError(s.message());
    }
    return s;
  }
  running_ = true;
  return absl::OkStatus();
}

absl::Status PgServer::Start() {
  if (running_) return absl::OkStatus();
  if (!root_dir_.empty()) return StartOnPort();  // restart: same port
  if (absl::Status s = Init(); !s.ok()) return s;
  absl::Status s;
  for (int i = 0; i < kPortAttempts; ++i) {
    absl::StatusOr<int> port = PickUnusedPort();
    if (!port.ok()) return port.status();
    port_ = *port;
    s = StartOnPort();
    if (!absl::IsAlreadyExists(s)) return s;
    SC_LOG(WARNING) << "port " << port_ << " was taken; trying another";
  }
  return absl::InternalError(
      absl::StrCat("could not find a free port: ", s.message()));
}

absl::Status PgServer::Stop() {
  if (!running_) return absl::OkStatus();
  absl::StatusOr<int> rc =
      RunCommand(AsServerUser({options_.bin_dir + "/pg_ctl", "-D", data_dir_,
                               "-m", "fast", "-w", "stop"}),
                 {}, root_dir_ + "/pg_ctl.log", absl::Seconds(60), root_dir_);
  if (!rc.ok()) return rc.status();
  if (*rc != 0) {
    return absl::InternalError(
        absl::StrCat("pg_ctl stop exited with ", *rc, ": ",
                     ReadTail(root_dir_ + "/pg_ctl.log", 1000)));
  }
  running_ = false;
  return absl::OkStatus();
}

absl::Status PgServer::Restart() {
  if (absl::Status s = Stop(); !s.ok()) return s;
  return Start();
}

absl::StatusOr<std::string> PgServer::CreateDatabase(const std::string& name) {
  if (!running_) return absl::FailedPreconditionError("server is not running");
  pg::ConnectOptions options;
  options.connect_timeout = absl::Seconds(10);
  absl::StatusOr<std::unique_ptr<pg::Connection>> conn =
      pg::Connection::Open(ConnInfo("postgres"), options);
  if (!conn.ok()) return conn.status();
  absl::StatusOr<pg::Result> r = (*conn)->Exec(
      absl::StrCat("CREATE DATABASE ", pg::QuoteIdentifier(name)));
  if (!r.ok()) return r.status();
  return ConnInfo(name);
}

}  // namespace sidecar::testing
