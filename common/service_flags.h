// The flags both services define alike: --state_dir, --local_listen and
// --local_listen_allow_network. In a library of their own (sidecar_service
// _flags) that only the two service binaries link: sidecarctl defines its
// own --state_dir.
#ifndef SIDECAR_COMMON_SERVICE_FLAGS_H_
#define SIDECAR_COMMON_SERVICE_FLAGS_H_

#include <string>

#include "common/transport.h"

namespace sidecar {

// --state_dir, else DefaultStateDir().
std::string StateDirFromFlags();

// The local listener of `service` ("availability" or "transfer"):
// --local_listen, else its unix socket in `state_dir`.
LocalListener LocalListenerFromFlags(const std::string& state_dir,
                                     const std::string& service);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_SERVICE_FLAGS_H_
