// Text formatting for sidecarctl's output: tables, sizes, durations, short
// identifiers, and RPC errors worded so that a person can act on them.
#ifndef SIDECAR_SERVICES_SIDECARCTL_FORMAT_H_
#define SIDECAR_SERVICES_SIDECARCTL_FORMAT_H_

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/bytes_format.h"  // HumanBytes, for the commands
#include "google/protobuf/timestamp.pb.h"

namespace sidecar::ctl {

// "UNAVAILABLE", "NOT_FOUND", ... as google.rpc.Code spells them.
absl::string_view StatusCodeName(grpc::StatusCode code);

// One line (no trailing newline) describing a failed call of `service`
// ("availability" or "transfer", also the name of its address flag) at
// `address`. UNAVAILABLE says the service cannot be reached there, asks
// whether it runs, and names --state_dir and --<service>, which choose where
// sidecarctl looks; DEADLINE_EXCEEDED names the timeout; anything else is
// "CODE_NAME: message".
std::string DescribeRpcError(const grpc::Status& status,
                             absl::string_view service,
                             absl::string_view address, absl::Duration timeout);

// First 8 characters of a device id ("3f2a1b4c"); the whole id if shorter,
// "?" if empty.
std::string ShortId(absl::string_view device_id);
// First 8 hex digits of a raw digest ("1a2b3c4d"); "-" if empty.
std::string ShortSha(absl::string_view raw_sha256);
// Full lowercase hex of raw bytes.
std::string Hex(absl::string_view raw);
// "0.42 ms", "12 ms"; "-" for 0 (not measured).
std::string Rtt(uint32_t micros);
// "12.5 MiB/s"; "-" for 0 (not measured).
std::string Throughput(uint64_t bytes_per_sec);
// "4s ago", "3m ago", "2h ago", "5d ago"; "never" for an unset timestamp.
std::string Ago(const google::protobuf::Timestamp& ts, absl::Time now);

// ANSI colours for text meant for a person at a terminal.
enum class Colour { kRed, kGreen, kYellow, kBold };
// `text` wrapped in the ANSI escapes of `colour` if `enabled`, else `text`
// unchanged (a pipe, NO_COLOR, --json: see CommandContext::out_in_colour).
std::string Paint(absl::string_view text, Colour colour, bool enabled);

// Writes rows as left-aligned columns separated by two spaces. The first row
// is the header. Trailing spaces are not written.
void PrintTable(std::ostream& out,
                const std::vector<std::vector<std::string>>& rows);
// The same for a table printed a part at a time: `width` (empty at first,
// kept between calls) is widened to fit `rows` before they are written, so
// the parts line up unless a later part has a wider cell.
void PrintTablePart(std::ostream& out,
                    const std::vector<std::vector<std::string>>& rows,
                    std::vector<size_t>* width);

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_FORMAT_H_
