// Polling for conditions that other processes make true (gossip spread,
// a fetch finishing): the tests' one way to wait, with a bound.
#ifndef SIDECAR_TESTS_SUPPORT_WAIT_H_
#define SIDECAR_TESTS_SUPPORT_WAIT_H_

#include <functional>
#include <optional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace sidecar::testing {

// Calls `cond` every `poll` until it returns true or `timeout` has passed.
// Returns how long it took, or nullopt on timeout.
inline std::optional<absl::Duration> WaitFor(
    const std::function<bool()>& cond, absl::Duration timeout,
    absl::Duration poll = absl::Milliseconds(20)) {
  const absl::Time start = absl::Now();
  while (absl::Now() - start < timeout) {
    if (cond()) return absl::Now() - start;
    absl::SleepFor(poll);
  }
  return std::nullopt;
}

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_WAIT_H_
