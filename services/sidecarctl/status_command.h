// sidecarctl status: one screen answering "is sync working here?", from
// the local APIs of both services of a device:
//
//   availability: GetDevice (this device), ListPeers (members online and
//                 offline, last contact)
//   transfer:     ListJobs (jobs by state, what is being fetched, the last
//                 errors), GetStoreUsage (use against the quota; "no quota"
//                 without one), GetPrefetchPolicy (paused or not, and why)
//
// A service that does not answer is named, with how to start it, and what
// the other gave is still shown; the exit status is then kExitRpcError, as
// it is when any other call fails. GetStoreUsage and GetPrefetchPolicy
// answered UNIMPLEMENTED (an older transfer service) are not failures.
// With --json, one object holds every answer.
#ifndef SIDECAR_SERVICES_SIDECARCTL_STATUS_COMMAND_H_
#define SIDECAR_SERVICES_SIDECARCTL_STATUS_COMMAND_H_

#include <vector>

#include "services/sidecarctl/cli.h"

namespace sidecar::ctl {

// The status command (one CommandSpec, for main's table).
std::vector<CommandSpec> StatusCommands();

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_STATUS_COMMAND_H_
