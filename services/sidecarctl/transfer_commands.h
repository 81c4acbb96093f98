// sidecarctl's commands for the transfer service (Transfer in
// protos/sidecar/v1/transfer.proto), reached at --transfer:
//
//   fetch URI... [--priority=P] [--no-wait]   Fetch, then WatchJob per job
//   jobs [--active] [--limit=N]               ListJobs as a table
//   cancel JOB_ID                             Cancel (a unique id prefix is
//                                             looked up with ListJobs)
//
// fetch prints one line per sidecar on stdout: "LOCAL URI PATH",
// "GENERATE URI REASON" or "QUEUED URI job ID", then (unless --no-wait)
// follows the queued jobs one after another, showing progress on stderr,
// and prints each one's end: "DONE URI PATH (REASON)", "GENERATE URI
// REASON" or "CANCELLED URI REASON". Its exit status is kExitOk if every
// sidecar is LOCAL or DONE (or queued, with --no-wait), kExitNotFetched if
// any ended GENERATE or CANCELLED, kExitRpcError if a call failed,
// kExitUsage for a bad command line, kExitInterrupted on Ctrl-C (the jobs
// go on in the service).
#ifndef SIDECAR_SERVICES_SIDECARCTL_TRANSFER_COMMANDS_H_
#define SIDECAR_SERVICES_SIDECARCTL_TRANSFER_COMMANDS_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "services/sidecarctl/cli.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::ctl {

// The transfer commands, in the order the usage lists them.
std::vector<CommandSpec> TransferCommands();

// "interactive", "normal", "prefetch" (any case) to the enum; anything else
// is INVALID_ARGUMENT.
absl::StatusOr<v1::Priority> ParsePriorityName(absl::string_view name);

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_TRANSFER_COMMANDS_H_
