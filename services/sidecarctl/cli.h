// The command-line machinery of sidecarctl: the command table, argument
// parsing against it, usage text, exit codes, and the context every command
// runs in (where the services are, how long to wait, where to write).
//
// A command is a CommandSpec; a group of commands (availability, transfer) is
// a function returning a vector of them, and main() concatenates the
// groups. Command-specific options are ordinary Abseil flags, listed by
// name in the spec so that a flag given to the wrong command is a usage
// error rather than silently ignored. Command names are single words; a
// command with subcommands (pair invite|join) takes the subcommand as its
// first argument.
#ifndef SIDECAR_SERVICES_SIDECARCTL_CLI_H_
#define SIDECAR_SERVICES_SIDECARCTL_CLI_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "sidecar/v1/availability.grpc.pb.h"
#include "sidecar/v1/transfer.grpc.pb.h"

namespace sidecar::ctl {

inline constexpr char kProgram[] = "sidecarctl";

// Process exit status of sidecarctl.
enum ExitCode : int {
  kExitOk = 0,
  kExitRpcError = 1,  // a call failed (service unreachable, refused, ...)
  kExitUsage = 2,     // bad command line or bad input (URI, file, batch line)
  // fetch: the calls worked, but some sidecar was not fetched (it ended
  // GENERATE or CANCELLED): the caller should generate it.
  kExitNotFetched = 3,
  kExitInterrupted = 130,  // Ctrl-C or SIGTERM while following jobs
};

// Everything a command needs. Reads the global flags (--state_dir,
// --availability, --transfer, --timeout, --json) and their environment
// variables when constructed, so construct it after ParseCommandLine. Not
// thread-safe.
class CommandContext {
 public:
  CommandContext(std::ostream& out, std::ostream& err);

  std::ostream& out() { return out_; }
  std::ostream& err() { return err_; }
  // True if err() is std::cerr and stderr is a terminal (progress bars).
  bool err_is_terminal() const { return err_is_terminal_; }
  // True if out() may carry ANSI colour: it is std::cout, stdout is a
  // terminal, $NO_COLOR is unset (https://no-color.org) and not --json.
  bool out_in_colour() const { return out_in_colour_; }
  // --json: commands print one JSON document on out() instead of their
  // text, and no progress.
  bool json() const { return json_; }
  // Writes `document` (JSON, one line) and a newline to out(); returns
  // kExitOk.
  int PrintJson(absl::string_view document);
  // The same for a message in its JSON form (MessageJson).
  int PrintJson(const google::protobuf::Message& message);

  // --state_dir, else $SIDECAR_STATE_DIR, else DefaultStateDir(): the
  // device's state directory, where its services' local API sockets are.
  const std::string& state_dir() const { return state_dir_; }
  // The availability service's local API: --availability, else
  // $SIDECAR_AVAILABILITY, else "unix:<state_dir>/availability.sock".
  const std::string& availability_address() const { return availability_; }
  // The transfer service's local API: --transfer, else $SIDECAR_TRANSFER,
  // else "unix:<state_dir>/transfer.sock".
  const std::string& transfer_address() const { return transfer_; }
  // --timeout: the deadline of every unary call.
  absl::Duration timeout() const { return timeout_; }

  // A stub for the availability service, made on first use (a plaintext
  // channel to the local API, MakeLocalChannel).
  v1::Availability::Stub& availability();
  // A stub for the transfer service, made on first use (likewise).
  v1::Transfer::Stub& transfer();
  // Sets the --timeout deadline on `ctx`.
  void SetCallDeadline(grpc::ClientContext* ctx) const;

  // Prints "sidecarctl: <message>" to err() and returns kExitUsage.
  int UsageError(absl::string_view message);
  // Prints "sidecarctl: <what>: <described error>" to err(), wording
  // UNAVAILABLE and DEADLINE_EXCEEDED as advice, and returns kExitRpcError.
  // UNAVAILABLE is "cannot reach the service at <address>" (naming
  // --state_dir and --availability) unless the service was reached and
  // answered UNAVAILABLE itself: then its own message is shown.
  int AvailabilityError(absl::string_view what, const grpc::Status& status);
  // The same for a call made with a deadline of `deadline` rather than
  // --timeout (which DEADLINE_EXCEEDED names).
  int AvailabilityError(absl::string_view what, const grpc::Status& status,
                        absl::Duration deadline);
  // The same for a call to the transfer service.
  int TransferError(absl::string_view what, const grpc::Status& status);

 private:
  std::ostream& out_;
  std::ostream& err_;
  const bool err_is_terminal_;
  const bool json_;
  const bool out_in_colour_;
  std::string state_dir_;
  std::string availability_;
  std::string transfer_;
  absl::Duration timeout_;
  std::shared_ptr<grpc::Channel> availability_channel_;
  std::shared_ptr<grpc::Channel> transfer_channel_;
  std::unique_ptr<v1::Availability::Stub> availability_stub_;
  std::unique_ptr<v1::Transfer::Stub> transfer_stub_;
};

struct CommandSpec {
  using RunFn =
      std::function<int(CommandContext& ctx, const std::vector<std::string>&)>;
  static constexpr int kUnlimited = -1;

  std::string name = {};      // "who-has"
  std::string synopsis = {};  // arguments, e.g. "URI..."
  std::string summary = {};   // one line for the command list
  std::string details = {};   // more lines for "sidecarctl help <command>"
  // Names of the Abseil flags this command accepts beyond the global ones.
  std::vector<std::string> flags = {};
  int min_args = 0;
  int max_args = 0;  // or kUnlimited
  // The command runs until interrupted: SIGINT and SIGTERM are blocked in
  // every thread before any channel exists, for an InterruptWatcher to take.
  bool wants_signals = false;
  RunFn run;  // returns an ExitCode
};

struct Invocation {
  const CommandSpec* command = nullptr;  // null with help: the program's usage
  std::vector<std::string> args;         // positional arguments after it
  bool help = false;                     // print usage, run nothing
};

// Parses argv against `commands`. Flags may come before or after the command
// name, as --name=value, --name value, and for booleans also --name and
// --noname; '-' in a flag's name is read as '_' (--no-wait is --no_wait);
// "--" ends the flags. "help [COMMAND]", --help and -h ask for
// usage. On success every given flag has been set. A usage error is
// INVALID_ARGUMENT with a message for a person.
absl::StatusOr<Invocation> ParseCommandLine(
    int argc, char** argv, const std::vector<CommandSpec>& commands);

// The program's usage: synopsis, global flags, one line per command.
void PrintUsage(std::ostream& out, const std::vector<CommandSpec>& commands);
// One command's usage with its flags, their defaults and help.
void PrintCommandUsage(std::ostream& out, const CommandSpec& command);

// While alive, a thread waits for SIGINT or SIGTERM (which the caller must
// have blocked, see CommandSpec::wants_signals) and calls `on_interrupt`
// once from that thread when one arrives.
class InterruptWatcher {
 public:
  explicit InterruptWatcher(std::function<void()> on_interrupt);
  ~InterruptWatcher();
  InterruptWatcher(const InterruptWatcher&) = delete;
  InterruptWatcher& operator=(const InterruptWatcher&) = delete;

  bool interrupted() const { return interrupted_.load(); }

 private:
  std::function<void()> on_interrupt_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> interrupted_{false};
  std::thread thread_;
};

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_CLI_H_
