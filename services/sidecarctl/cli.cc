#include "services/sidecarctl/cli.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <iostream>
#include <utility>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/state_dir.h"
#include "common/transport.h"
#include "services/sidecarctl/format.h"
#include "services/sidecarctl/json_output.h"

ABSL_FLAG(std::string, state_dir, "",
          "the device's state directory, where its services' sockets are "
          "(default: $SIDECAR_STATE_DIR, else $XDG_STATE_HOME/sidecar-sync "
          "or ~/.local/state/sidecar-sync)");
ABSL_FLAG(std::string, availability, "",
          "the availability service, unix:PATH or a loopback host:port "
          "(default: $SIDECAR_AVAILABILITY, else "
          "unix:STATE_DIR/availability.sock)");
ABSL_FLAG(std::string, transfer, "",
          "the transfer service, unix:PATH or a loopback host:port "
          "(default: $SIDECAR_TRANSFER, else unix:STATE_DIR/transfer.sock)");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(5),
          "deadline of each call, e.g. 5s, 500ms");
ABSL_FLAG(bool, json, false,
          "print the answer as one JSON document on stdout (the services' "
          "messages in proto3's JSON form) instead of text; errors stay on "
          "stderr");

namespace sidecar::ctl {
namespace {

const std::vector<std::string>& GlobalFlags() {
  static const auto* flags = new std::vector<std::string>{
      "state_dir", "availability", "transfer", "timeout", "json"};
  return *flags;
}

// The flag's value, else the environment variable's, else `fallback`.
std::string FlagOrEnv(const std::string& flag, const char* env_name,
                      const std::string& fallback) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv(env_name);
  return (env != nullptr && *env != '\0') ? std::string(env) : fallback;
}

struct RawFlag {
  std::string name;
  std::string value;
  bool has_value = false;
};

const CommandSpec* FindCommand(const std::vector<CommandSpec>& commands,
                               absl::string_view name) {
  for (const CommandSpec& c : commands) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

bool IsBoolFlag(absl::string_view name) {
  absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
  return f != nullptr && f->IsOfType<bool>();
}

bool Contains(const std::vector<std::string>& v, absl::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

void PrintFlag(std::ostream& out, absl::string_view name) {
  absl::CommandLineFlag* f = absl::FindCommandLineFlag(name);
  if (f == nullptr) return;
  out << "  --" << name;
  if (!f->IsOfType<bool>()) out << "=" << f->DefaultValue();
  out << "\n      " << f->Help() << "\n";
}

// DescribeRpcError, except for an UNAVAILABLE that the service itself
// answered (its connection is up): then the service could not reach
// something it needs (another device, the other service), and its message
// says what, so "cannot reach the service" would mislead.
std::string DescribeCallError(const grpc::Status& status,
                              absl::string_view service,
                              absl::string_view address, grpc::Channel* channel,
                              absl::Duration deadline) {
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE &&
      channel != nullptr &&
      channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) {
    return absl::StrCat(StatusCodeName(status.error_code()), ": ",
                        status.error_message());
  }
  return DescribeRpcError(status, service, address, deadline);
}

// Colour only for a person at a terminal who has not asked for none.
bool WantsColour(const std::ostream& out, bool json) {
  const char* no_color = std::getenv("NO_COLOR");
  return !json && &out == &std::cout && isatty(STDOUT_FILENO) == 1 &&
         (no_color == nullptr || *no_color == '\0');
}

}  // namespace

CommandContext::CommandContext(std::ostream& out, std::ostream& err)
    : out_(out),
      err_(err),
      err_is_terminal_(&err == &std::cerr && isatty(STDERR_FILENO) == 1),
      json_(absl::GetFlag(FLAGS_json)),
      out_in_colour_(WantsColour(out, json_)),
      state_dir_(FlagOrEnv(absl::GetFlag(FLAGS_state_dir), "SIDECAR_STATE_DIR",
                           DefaultStateDir())),
      availability_(FlagOrEnv(absl::GetFlag(FLAGS_availability),
                              "SIDECAR_AVAILABILITY",
                              LocalSocketAddress(state_dir_, "availability"))),
      transfer_(FlagOrEnv(absl::GetFlag(FLAGS_transfer), "SIDECAR_TRANSFER",
                          LocalSocketAddress(state_dir_, "transfer"))),
      timeout_(absl::GetFlag(FLAGS_timeout)) {}

v1::Availability::Stub& CommandContext::availability() {
  if (availability_stub_ == nullptr) {
    availability_channel_ = MakeLocalChannel(availability_);
    availability_stub_ = v1::Availability::NewStub(availability_channel_);
  }
  return *availability_stub_;
}

v1::Transfer::Stub& CommandContext::transfer() {
  if (transfer_stub_ == nullptr) {
    transfer_channel_ = MakeLocalChannel(transfer_);
    transfer_stub_ = v1::Transfer::NewStub(transfer_channel_);
  }
  return *transfer_stub_;
}

int CommandContext::PrintJson(absl::string_view document) {
  out_ << document << "\n";
  return kExitOk;
}

int CommandContext::PrintJson(const google::protobuf::Message& message) {
  return PrintJson(MessageJson(message));
}

void CommandContext::SetCallDeadline(grpc::ClientContext* ctx) const {
  SetDeadline(ctx, timeout_);
}

int CommandContext::UsageError(absl::string_view message) {
  err_ << kProgram << ": " << message << "\n";
  return kExitUsage;
}

int CommandContext::AvailabilityError(absl::string_view what,
                                      const grpc::Status& status) {
  return AvailabilityError(what, status, timeout_);
}

int CommandContext::AvailabilityError(absl::string_view what,
                                      const grpc::Status& status,
                                      absl::Duration deadline) {
  err_ << kProgram << ": " << what << ": "
       << DescribeCallError(status, "availability", availability_,
                            availability_channel_.get(), deadline)
       << "\n";
  return kExitRpcError;
}

int CommandContext::TransferError(absl::string_view what,
                                  const grpc::Status& status) {
  err_ << kProgram << ": " << what << ": "
       << DescribeCallError(status, "transfer", transfer_,
                            transfer_channel_.get(), timeout_)
       << "\n";
  return kExitRpcError;
}

absl::StatusOr<Invocation> ParseCommandLine(
    int argc, char** argv, const std::vector<CommandSpec>& commands) {
  std::vector<RawFlag> flags;
  std::vector<std::string> positional;
  bool help = false;
  bool flags_done = false;
  for (int i = 1; i < argc; ++i) {
    absl::string_view a = argv[i];
    if (flags_done || a.size() < 2 || a[0] != '-') {
      positional.emplace_back(a);
      continue;
    }
    if (a == "--") {
      flags_done = true;
      continue;
    }
    if (a == "-h" || a == "--help" || a == "-help") {
      help = true;
      continue;
    }
    a.remove_prefix(a[1] == '-' ? 2 : 1);
    RawFlag f;
    if (size_t eq = a.find('='); eq != absl::string_view::npos) {
      f.name = std::string(a.substr(0, eq));
      f.value = std::string(a.substr(eq + 1));
      f.has_value = true;
      std::replace(f.name.begin(), f.name.end(), '-', '_');
    } else {
      f.name = std::string(a);
      std::replace(f.name.begin(), f.name.end(), '-', '_');
      if (IsBoolFlag(f.name)) {
        f.value = "true";
        f.has_value = true;
      } else if (absl::StartsWith(f.name, "no") &&
                 IsBoolFlag(f.name.substr(2))) {
        f.name = f.name.substr(2);
        f.value = "false";
        f.has_value = true;
      } else if (absl::FindCommandLineFlag(f.name) != nullptr && i + 1 < argc) {
        f.value = argv[++i];
        f.has_value = true;
      }
    }
    flags.push_back(std::move(f));
  }

  Invocation inv;
  inv.help = help;
  if (!positional.empty() && positional[0] == "help") {
    inv.help = true;
    positional.erase(positional.begin());
  }
  if (positional.empty()) {
    if (inv.help) return inv;
    return absl::InvalidArgumentError("no command given");
  }
  inv.command = FindCommand(commands, positional[0]);
  if (inv.command == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown command \"", positional[0], "\"; run \"",
                     kProgram, " help\" for the list"));
  }
  if (inv.help) return inv;
  const CommandSpec& cmd = *inv.command;
  inv.args.assign(positional.begin() + 1, positional.end());

  for (const RawFlag& f : flags) {
    if (!Contains(GlobalFlags(), f.name) && !Contains(cmd.flags, f.name)) {
      std::string accepted =
          cmd.flags.empty()
              ? "no flags of its own"
              : absl::StrCat("--", absl::StrJoin(cmd.flags, ", --"));
      return absl::InvalidArgumentError(
          absl::StrCat("unknown flag --", f.name, " for \"", cmd.name,
                       "\" (it takes ", accepted, ")"));
    }
    if (!f.has_value) {
      return absl::InvalidArgumentError(absl::StrCat(
          "flag --", f.name, " needs a value: --", f.name, "=VALUE"));
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(f.name);
    std::string error;
    if (flag == nullptr || !flag->ParseFrom(f.value, &error)) {
      return absl::InvalidArgumentError(
          absl::StrCat("bad value for --", f.name, ": ", error));
    }
  }

  int n = static_cast<int>(inv.args.size());
  if (n < cmd.min_args ||
      (cmd.max_args != CommandSpec::kUnlimited && n > cmd.max_args)) {
    return absl::InvalidArgumentError(
        absl::StrCat("wrong number of arguments; usage: ", kProgram, " ",
                     cmd.name, cmd.synopsis.empty() ? "" : " ", cmd.synopsis));
  }
  return inv;
}

void PrintUsage(std::ostream& out, const std::vector<CommandSpec>& commands) {
  out << "usage: " << kProgram << " [--state_dir=DIR] "
      << "[--availability=ADDRESS]\n"
      << "                  [--transfer=ADDRESS] [--timeout=DURATION] "
      << "[--json]\n"
      << "                  COMMAND [ARGS...]\n\n"
      << "The services of a device are reached at their local API sockets "
      << "in its state\ndirectory, unix:STATE_DIR/availability.sock and "
      << "unix:STATE_DIR/transfer.sock.\n\n"
      << "Sidecars are named by URIs: "
      << "sidecar://{content_uuid}/{kind_dir}/{variant}.{ext}\n"
      << "e.g. sidecar://550e8400-e29b-41d4-a716-446655440000/thumbs/"
         "grid@2x.webp\n\ncommands:\n";
  std::vector<std::vector<std::string>> rows;
  for (const CommandSpec& c : commands) {
    rows.push_back({absl::StrCat("  ", c.name), c.summary});
  }
  PrintTable(out, rows);
  out << "\nglobal flags:\n";
  for (const std::string& f : GlobalFlags()) PrintFlag(out, f);
  out << "\nexit status: 0 ok, 1 a call failed, 2 usage or input error,\n"
      << "3 fetch: some sidecar was not fetched (GENERATE or CANCELLED).\n"
      << "\"" << kProgram << " help COMMAND\" describes one command.\n";
}

void PrintCommandUsage(std::ostream& out, const CommandSpec& command) {
  out << "usage: " << kProgram << " " << command.name
      << (command.synopsis.empty() ? "" : " ") << command.synopsis << "\n\n"
      << command.summary << "\n";
  if (!command.details.empty()) out << "\n" << command.details << "\n";
  if (!command.flags.empty()) {
    out << "\nflags:\n";
    for (const std::string& f : command.flags) PrintFlag(out, f);
  }
  out << "\nglobal flags:\n";
  for (const std::string& f : GlobalFlags()) PrintFlag(out, f);
}

InterruptWatcher::InterruptWatcher(std::function<void()> on_interrupt)
    : on_interrupt_(std::move(on_interrupt)) {
  thread_ = std::thread([this] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    const timespec poll = {0, 100 * 1000 * 1000};
    while (!stop_.load()) {
      if (sigtimedwait(&set, nullptr, &poll) > 0) {
        interrupted_.store(true);
        on_interrupt_();
        return;
      }
    }
  });
}

InterruptWatcher::~InterruptWatcher() {
  stop_.store(true);
  thread_.join();
}

}  // namespace sidecar::ctl
