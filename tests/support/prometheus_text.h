// Reading metrics the way Prometheus does, for tests: a scrape over real
// HTTP, and values picked out of the text exposition format.
#ifndef SIDECAR_TESTS_SUPPORT_PROMETHEUS_TEXT_H_
#define SIDECAR_TESTS_SUPPORT_PROMETHEUS_TEXT_H_

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace sidecar::testing {

// GET http://127.0.0.1:`port``path` (HTTP/1.0): the body of a 200 answer,
// else an error naming the status line.
absl::StatusOr<std::string> HttpGet(int port, const std::string& path,
                                    absl::Duration timeout = absl::Seconds(5));

// The sum of the samples of metric `name` whose labels include all of
// `labels` (others may be there too); nullopt if there is none. `name` is
// a sample's name, e.g. "grpc_server_handling_seconds_count".
std::optional<double> SampleSum(
    const std::string& text, const std::string& name,
    const std::map<std::string, std::string>& labels = {});

// How many samples of `name` there are (any labels), e.g. to check that
// no series was made for a label value.
int SampleCount(const std::string& text, const std::string& name,
                const std::map<std::string, std::string>& labels = {});

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_PROMETHEUS_TEXT_H_
