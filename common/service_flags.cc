#include "common/service_flags.h"

#include "absl/flags/flag.h"
#include "common/state_dir.h"

ABSL_FLAG(std::string, state_dir, "",
          "directory of the device key and the local sockets, shared by the "
          "device's two services (default: $XDG_STATE_HOME/sidecar-sync or "
          "~/.local/state/sidecar-sync)");
ABSL_FLAG(std::string, local_listen, "",
          "where the local API listens: unix:/path or a loopback host:port "
          "(default: unix:<state_dir>/<service>.sock)");
ABSL_FLAG(bool, local_listen_allow_network, false,
          "allow --local_listen on a non-loopback address (a container's "
          "private network; never a network other devices share)");

namespace sidecar {

std::string StateDirFromFlags() {
  std::string dir = absl::GetFlag(FLAGS_state_dir);
  return dir.empty() ? DefaultStateDir() : dir;
}

LocalListener LocalListenerFromFlags(const std::string& state_dir,
                                     const std::string& service) {
  std::string address = absl::GetFlag(FLAGS_local_listen);
  if (address.empty()) address = LocalSocketAddress(state_dir, service);
  return LocalListener{address, absl::GetFlag(FLAGS_local_listen_allow_network)};
}

}  // namespace sidecar
