// sidecarctl's commands for the availability service (device, register,
// remove, ls, who-has, resolve, peers, watch), and the input parsers they
// share. Each command prints its results to ctx.out(), its errors to
// ctx.err(), and returns an ExitCode.
#ifndef SIDECAR_SERVICES_SIDECARCTL_COMMANDS_H_
#define SIDECAR_SERVICES_SIDECARCTL_COMMANDS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/request_limits.h"
#include "services/sidecarctl/cli.h"
#include "sidecar/v1/availability.pb.h"

namespace sidecar::ctl {

// The availability commands, in the order the usage lists them.
std::vector<CommandSpec> AvailabilityCommands();

// The URI of a key, or "<invalid key: why>".
std::string UriOf(const v1::SidecarKey& proto);
// Parses every URI into `keys`, or reports the first bad one as a usage
// error naming it. Returns kExitOk on success, else kExitUsage.
int ParseUris(CommandContext& ctx, const std::vector<std::string>& uris,
              std::vector<v1::SidecarKey>* keys);

// "ready", "pending", "failed" (any case) to the enum; "" and "any" to
// UNSPECIFIED when `allow_any`. Anything else is INVALID_ARGUMENT.
absl::StatusOr<v1::SidecarStatus> ParseStatusName(absl::string_view name,
                                                  bool allow_any);
// "local-only", "fetch-only", "fetch-or-generate" to the enum.
absl::StatusOr<v1::ResolveMode> ParseResolveMode(absl::string_view name);

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_COMMANDS_H_
