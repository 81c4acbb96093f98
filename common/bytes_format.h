// Byte counts for people: log lines, error messages and the CLI.
#ifndef SIDECAR_COMMON_BYTES_FORMAT_H_
#define SIDECAR_COMMON_BYTES_FORMAT_H_

#include <cstdint>
#include <string>

namespace sidecar {

// "812 B", "45.1 KiB", "3.2 MiB", "1.5 GiB": exact below 1 KiB, else one
// decimal in the largest binary unit (up to PiB) that keeps the number
// below 1024 before rounding (so 1048575 bytes is "1024.0 KiB").
std::string HumanBytes(uint64_t bytes);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_BYTES_FORMAT_H_
