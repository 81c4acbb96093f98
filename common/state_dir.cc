#include "common/state_dir.h"

#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"

namespace sidecar {

std::string DefaultStateDir() {
  if (const char* x = std::getenv("XDG_STATE_HOME"); x != nullptr && *x) {
    return absl::StrCat(x, "/sidecar-sync");
  }
  if (const char* h = std::getenv("HOME"); h != nullptr && *h) {
    return absl::StrCat(h, "/.local/state/sidecar-sync");
  }
  return "./state";
}

std::string LocalSocketAddress(const std::string& state_dir,
                               const std::string& service) {
  std::error_code ec;
  std::filesystem::path dir = std::filesystem::absolute(state_dir, ec);
  if (ec) dir = state_dir;
  return absl::StrCat("unix:", (dir / (service + ".sock")).string());
}

}  // namespace sidecar
