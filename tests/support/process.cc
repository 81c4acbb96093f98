#include "tests/support/process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

extern char** environ;

namespace sidecar::testing {
namespace {

int DecodeWaitStatus(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return -1;
}

// Resolves argv[0] through PATH (in the parent: execvp is not
// async-signal-safe after fork in a threaded process).
std::optional<std::string> FindBinary(const std::string& name) {
  if (name.find('/') != std::string::npos) {
    if (access(name.c_str(), X_OK) == 0) return name;
    return std::nullopt;
  }
  const char* path = getenv("PATH");
  for (absl::string_view dir :
       absl::StrSplit(path ? path : "/usr/bin:/bin", ':')) {
    std::string candidate = absl::StrCat(dir.empty() ? "." : dir, "/", name);
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return std::nullopt;
}

}  // namespace

absl::StatusOr<ChildProcess> ChildProcess::Spawn(
    const std::vector<std::string>& argv,
    const std::map<std::string, std::string>& env, const std::string& log_path,
    const std::string& cwd) {
  if (argv.empty()) return absl::InvalidArgumentError("empty argv");
  std::optional<std::string> binary = FindBinary(argv[0]);
  if (!binary) {
    return absl::NotFoundError(
        absl::StrCat("no executable \"", argv[0], "\" (searched PATH)"));
  }
  // Everything the child needs is built before fork.
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    absl::string_view entry(*e);
    absl::string_view key = entry.substr(0, entry.find('='));
    if (!env.contains(std::string(key))) env_strings.emplace_back(entry);
  }
  for (const auto& [k, v] : env) env_strings.push_back(absl::StrCat(k, "=", v));
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);

  int log_fd = -1;
  if (!log_path.empty()) {
    log_fd =
        open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot open log file ", log_path, ": ", strerror(errno)));
    }
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    if (log_fd >= 0) close(log_fd);
    return absl::ResourceExhaustedError(
        absl::StrCat("fork failed: ", strerror(err)));
  }
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int null_fd = open("/dev/null", O_RDONLY);
    if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    if (log_fd >= 0) {
      dup2(log_fd, STDOUT_FILENO);
      dup2(log_fd, STDERR_FILENO);
    }
    if (!cwd.empty() && chdir(cwd.c_str()) != 0) _exit(126);
    execve(binary->c_str(), args.data(), envp.data());
    _exit(127);
  }
  if (log_fd >= 0) close(log_fd);
  ChildProcess child;
  child.pid_ = pid;
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)),
      exit_status_(std::move(other.exit_status_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0 && !exit_status_) Kill();
    pid_ = std::exchange(other.pid_, -1);
    exit_status_ = std::move(other.exit_status_);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && !exit_status_) Kill();
}

bool ChildProcess::Poll() {
  if (exit_status_) return true;
  if (pid_ <= 0) return true;
  int status = 0;
  pid_t r;
  do {
    r = waitpid(pid_, &status, WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == pid_) {
    exit_status_ = DecodeWaitStatus(status);
    return true;
  }
  if (r < 0) {  // ECHILD: reaped elsewhere; treat as gone
    exit_status_ = -1;
    return true;
  }
  return false;
}

absl::Status ChildProcess::Signal(int sig) {
  if (pid_ <= 0 || exit_status_) {
    return absl::FailedPreconditionError("process has exited");
  }
  if (kill(pid_, sig) != 0) {
    return absl::InternalError(absl::StrCat("kill: ", strerror(errno)));
  }
  return absl::OkStatus();
}

int ChildProcess::Kill() {
  if (!Poll()) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    exit_status_ = DecodeWaitStatus(status);
  }
  return *exit_status_;
}

int ChildProcess::Terminate(absl::Duration timeout) {
  if (Poll()) return *exit_status_;
  kill(pid_, SIGTERM);
  if (std::optional<int> s = Wait(timeout)) return *s;
  return Kill();
}

std::optional<int> ChildProcess::Wait(absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  absl::Duration nap = absl::Milliseconds(1);
  while (!Poll()) {
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return std::nullopt;
    absl::SleepFor(std::min(nap, left));
    nap = std::min(nap * 2, absl::Milliseconds(50));
  }
  return exit_status_;
}

bool ChildProcess::IsRunning() { return !Poll(); }

absl::StatusOr<int> RunCommand(const std::vector<std::string>& argv,
                               const std::map<std::string, std::string>& env,
                               const std::string& log_path,
                               absl::Duration timeout, const std::string& cwd) {
  absl::StatusOr<ChildProcess> child =
      ChildProcess::Spawn(argv, env, log_path, cwd);
  if (!child.ok()) return child.status();
  if (std::optional<int> s = child->Wait(timeout)) return *s;
  child->Kill();
  return absl::DeadlineExceededError(absl::StrCat(
      argv[0], " did not finish within ", absl::FormatDuration(timeout)));
}

absl::Status WaitForFile(const std::string& path, absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  struct stat st;
  while (stat(path.c_str(), &st) != 0) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          path, " did not appear within ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> ReadPortFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::UnavailableError(absl::StrCat(path, " does not exist"));
  std::stringstream buf;
  buf << in.rdbuf();
  std::string text = buf.str();
  if (text.empty() || text.back() != '\n') {
    return absl::UnavailableError(
        absl::StrCat(path, " is not completely written yet"));
  }
  int port = 0;
  if (!absl::SimpleAtoi(absl::string_view(text).substr(0, text.size() - 1),
                        &port) ||
      port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " does not hold a port number: \"", text, "\""));
  }
  return port;
}

absl::StatusOr<int> WaitForPortFile(const std::string& path,
                                    absl::Duration timeout) {
  absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    absl::StatusOr<int> port = ReadPortFile(path);
    if (port.ok() || !absl::IsUnavailable(port.status())) return port;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          "no port in ", path, " after ", absl::FormatDuration(timeout), ": ",
          port.status().message()));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

namespace {

// A TCP socket bound to 127.0.0.1, port 0 (the kernel picks), not listening.
// Sets *port to the port it got.
absl::StatusOr<int> BindLoopbackPortZero(int* port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("bind: ", strerror(err)));
  }
  *port = ntohs(addr.sin_port);
  return fd;
}

}  // namespace

absl::StatusOr<int> PickUnusedPort() {
  int port = 0;
  absl::StatusOr<int> fd = BindLoopbackPortZero(&port);
  if (!fd.ok()) return fd.status();
  close(*fd);
  return port;
}

absl::StatusOr<ClosedPort> ClosedPort::Reserve() {
  ClosedPort p;
  absl::StatusOr<int> fd = BindLoopbackPortZero(&p.port_);
  if (!fd.ok()) return fd.status();
  p.fd_ = *fd;
  return p;
}

ClosedPort::ClosedPort(ClosedPort&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), port_(other.port_) {}

ClosedPort::~ClosedPort() {
  if (fd_ >= 0) close(fd_);
}

std::string ReadTail(const std::string& path, size_t max_bytes) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "";
  in.seekg(0, std::ios::end);
  std::streamoff size = in.tellg();
  std::streamoff start =
      size > static_cast<std::streamoff>(max_bytes) ? size - max_bytes : 0;
  in.seekg(start);
  std::string out(static_cast<size_t>(size - start), '\0');
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  return out;
}

}  // namespace sidecar::testing
