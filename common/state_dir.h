// Where a device keeps its state (the device key, the local API sockets),
// shared by both services and sidecarctl so that they find each other
// without flags in the usual cases.
#ifndef SIDECAR_COMMON_STATE_DIR_H_
#define SIDECAR_COMMON_STATE_DIR_H_

#include <string>

namespace sidecar {

// $XDG_STATE_HOME/sidecar-sync, else $HOME/.local/state/sidecar-sync, else
// ./state. (--state_dir and SIDECAR_STATE_DIR override it in each binary.)
std::string DefaultStateDir();

// The local API socket of `service` ("availability" or "transfer") in
// `state_dir`: "unix:<state_dir>/<service>.sock" (absolute).
std::string LocalSocketAddress(const std::string& state_dir,
                               const std::string& service);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_STATE_DIR_H_
