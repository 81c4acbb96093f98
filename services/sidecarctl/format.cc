#include "services/sidecarctl/format.h"

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace sidecar::ctl {

absl::string_view StatusCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "CODE_UNKNOWN";
  }
}

std::string DescribeRpcError(const grpc::Status& status,
                             absl::string_view service,
                             absl::string_view address,
                             absl::Duration timeout) {
  switch (status.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
      return absl::StrCat("cannot reach the ", service, " service at ", address,
                          ": is it running? --state_dir or --", service,
                          " point sidecarctl at a device's services "
                          "(UNAVAILABLE: ",
                          status.error_message(), ")");
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return absl::StrCat("the ", service, " service at ", address,
                          " did not answer within ",
                          absl::FormatDuration(timeout),
                          " (DEADLINE_EXCEEDED); try a longer --timeout");
    case grpc::StatusCode::UNIMPLEMENTED:
      return absl::StrCat("the ", service, " service at ", address,
                          " does not implement this call (UNIMPLEMENTED: ",
                          status.error_message(),
                          "); is it an older version, or another service?");
    default:
      return absl::StrCat(StatusCodeName(status.error_code()), ": ",
                          status.error_message());
  }
}

std::string ShortId(absl::string_view device_id) {
  if (device_id.empty()) return "?";
  return std::string(device_id.substr(0, 8));
}

std::string ShortSha(absl::string_view raw_sha256) {
  if (raw_sha256.empty()) return "-";
  return Hex(raw_sha256.substr(0, 4));
}

std::string Hex(absl::string_view raw) { return absl::BytesToHexString(raw); }

std::string Rtt(uint32_t micros) {
  if (micros == 0) return "-";
  if (micros < 10000) return absl::StrFormat("%.2f ms", micros / 1000.0);
  return absl::StrFormat("%d ms", (micros + 500) / 1000);
}

std::string Throughput(uint64_t bytes_per_sec) {
  if (bytes_per_sec == 0) return "-";
  return absl::StrCat(HumanBytes(bytes_per_sec), "/s");
}

std::string Ago(const google::protobuf::Timestamp& ts, absl::Time now) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "never";
  absl::Time t =
      absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
  int64_t s = absl::ToInt64Seconds(now - t);
  if (s < 0) s = 0;
  if (s < 120) return absl::StrCat(s, "s ago");
  if (s < 2 * 3600) return absl::StrCat(s / 60, "m ago");
  if (s < 2 * 86400) return absl::StrCat(s / 3600, "h ago");
  return absl::StrCat(s / 86400, "d ago");
}

std::string Paint(absl::string_view text, Colour colour, bool enabled) {
  if (!enabled) return std::string(text);
  absl::string_view code;
  switch (colour) {
    case Colour::kRed:
      code = "31";
      break;
    case Colour::kGreen:
      code = "32";
      break;
    case Colour::kYellow:
      code = "33";
      break;
    case Colour::kBold:
      code = "1";
      break;
  }
  return absl::StrCat("\x1b[", code, "m", text, "\x1b[0m");
}

void PrintTable(std::ostream& out,
                const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  PrintTablePart(out, rows, &width);
}

void PrintTablePart(std::ostream& out,
                    const std::vector<std::vector<std::string>>& rows,
                    std::vector<size_t>* width) {
  for (const auto& row : rows) {
    if (row.size() > width->size()) width->resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      (*width)[i] = std::max((*width)[i], row[i].size());
    }
  }
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      if (i > 0) line.append(2, ' ');
      line += row[i];
      if (i + 1 < row.size()) line.append((*width)[i] - row[i].size(), ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out << line << "\n";
  }
}

}  // namespace sidecar::ctl
