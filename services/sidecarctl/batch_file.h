// What sidecarctl reads from outside that is not a flag: sidecar URIs and
// the lines of a `register --batch` file. Parsing only, with no I/O beyond
// the stream it is handed, so that tests/fuzz runs it on arbitrary bytes.
#ifndef SIDECAR_SERVICES_SIDECARCTL_BATCH_FILE_H_
#define SIDECAR_SERVICES_SIDECARCTL_BATCH_FILE_H_

#include <cstdint>
#include <istream>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sidecar_key.h"
#include "sidecar/v1/availability.pb.h"

namespace sidecar::ctl {

// ParseSidecarUri, with every error naming the URI (errors in its parts,
// e.g. a malformed UUID, come from key validation without it).
absl::StatusOr<SidecarKey> ParseUri(absl::string_view uri);

// Parses one line of a --batch file, "URI SIZE SHA256HEX" separated by
// spaces or tabs, into `out` (key, size, sha256; status and generator are
// left alone). Returns false for a line to skip (blank or '#' comment);
// INVALID_ARGUMENT saying what is wrong with the line otherwise.
absl::StatusOr<bool> ParseBatchLine(absl::string_view line,
                                    v1::LocalSidecar* out);

// Checks every line of a batch file read from `in` (named `name` in
// messages) and counts the sidecars in it. INVALID_ARGUMENT "NAME:LINE:
// why" for the first bad line; nothing is sent before the whole file
// passed, so that a typo does not leave half a batch registered.
absl::StatusOr<uint64_t> CheckBatchFile(std::istream& in,
                                        absl::string_view name);

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_BATCH_FILE_H_
