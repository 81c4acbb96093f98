// Byte counts for people: log lines, error messages, flags and the CLI.
#ifndef SIDECAR_COMMON_BYTES_FORMAT_H_
#define SIDECAR_COMMON_BYTES_FORMAT_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace sidecar {

// "812 B", "45.1 KiB", "3.2 MiB", "1.5 GiB": exact below 1 KiB, else one
// decimal in the largest binary unit (up to PiB) that keeps the number
// below 1024 before rounding (so 1048575 bytes is "1024.0 KiB").
std::string HumanBytes(uint64_t bytes);

// "2G", "512M", "64k", "1.5G", "1048576", "2GiB": binary units (k = 1024).
// INVALID_ARGUMENT with the text for anything else.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_BYTES_FORMAT_H_
