// sidecarctl's commands for pairing and the library (the devices paired
// with each other), on the availability service (CreateInvite, JoinLibrary,
// ListMembers and Unpair in protos/sidecar/v1/availability.proto):
//
//   pair invite [--ttl=10m]     CreateInvite: a one-time code, and the
//                               command to run with it on the new device
//   pair join CODE [ADDRESS]    JoinLibrary, on the new device
//   devices [--removed]         ListMembers as a table
//   unpair DEVICE               Unpair (an id, a unique id prefix or a name)
//
// Command names are single words, so "pair" is one command whose first
// argument is the subcommand.
#ifndef SIDECAR_SERVICES_SIDECARCTL_PAIR_COMMANDS_H_
#define SIDECAR_SERVICES_SIDECARCTL_PAIR_COMMANDS_H_

#include <vector>

#include "services/sidecarctl/cli.h"

namespace sidecar::ctl {

// The pairing and library commands, in the order the usage lists them.
std::vector<CommandSpec> PairCommands();

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_PAIR_COMMANDS_H_
