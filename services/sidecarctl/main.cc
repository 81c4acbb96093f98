// sidecarctl: a command-line client of the sidecar-sync services.
//
//   sidecarctl [--state_dir=DIR] [--availability=ADDRESS]
//              [--transfer=ADDRESS] [--timeout=5s] [--json] COMMAND [ARGS...]
//
// The services are reached at their local API sockets in the device's state
// directory (unix:DIR/availability.sock, unix:DIR/transfer.sock) unless
// --availability or --transfer say otherwise.
//
// Exit status: 0 ok, 1 a call failed, 2 usage or input error, 3 fetch: some
// sidecar was not fetched (GENERATE or CANCELLED), 130 fetch interrupted.
#include <iostream>
#include <utility>
#include <vector>

#include "common/transport.h"
#include "services/sidecarctl/cli.h"
#include "services/sidecarctl/commands.h"
#include "services/sidecarctl/pair_commands.h"
#include "services/sidecarctl/status_command.h"
#include "services/sidecarctl/transfer_commands.h"

int main(int argc, char** argv) {
  using namespace sidecar::ctl;  // NOLINT(build/namespaces)
  // Command groups, in the order the usage lists them.
  std::vector<CommandSpec> commands = StatusCommands();
  for (CommandSpec& c : AvailabilityCommands())
    commands.push_back(std::move(c));
  for (CommandSpec& c : PairCommands()) commands.push_back(std::move(c));
  for (CommandSpec& c : TransferCommands()) commands.push_back(std::move(c));

  absl::StatusOr<Invocation> inv = ParseCommandLine(argc, argv, commands);
  if (!inv.ok()) {
    std::cerr << kProgram << ": " << inv.status().message() << "\n"
              << "run \"" << kProgram << " help\" for usage\n";
    return kExitUsage;
  }
  if (inv->help) {
    if (inv->command != nullptr) {
      PrintCommandUsage(std::cout, *inv->command);
    } else {
      PrintUsage(std::cout, commands);
    }
    return kExitOk;
  }
  // Before any gRPC thread exists, so that every thread inherits the mask.
  if (inv->command->wants_signals) sidecar::BlockShutdownSignals();

  CommandContext ctx(std::cout, std::cerr);
  return inv->command->run(ctx, inv->args);
}
