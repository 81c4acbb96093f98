#include "services/sidecarctl/progress.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "services/sidecarctl/cli.h"
#include "services/sidecarctl/format.h"

namespace sidecar::ctl {
namespace {

constexpr int kDefaultColumns = 80;
constexpr int kMaxBarWidth = 30;
constexpr int kMinBarWidth = 10;
constexpr absl::Duration kRedrawInterval = absl::Milliseconds(100);

// Width of the terminal on stderr, else kDefaultColumns.
int TerminalColumns() {
  winsize ws{};
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) {
    return ws.ws_col;
  }
  return kDefaultColumns;
}

// Percent of the size verified, 0..100; -1 when the size is unknown.
int Percent(const v1::JobStatus& s) {
  if (s.size() == 0) return -1;
  uint64_t done = std::min(s.bytes_verified(), s.size());
  return static_cast<int>(done * 100 / s.size());
}

std::string Fit(std::string line, int columns) {
  if (columns > 1 && static_cast<int>(line.size()) > columns - 1) {
    line.resize(columns - 1);  // the last column would wrap on some terminals
  }
  return line;
}

// "waiting to retry after attempt 2: <error>", "queued", ...
std::string NotRunning(const v1::JobStatus& s) {
  switch (s.state()) {
    case v1::JOB_STATE_QUEUED:
      return s.attempts() == 0
                 ? std::string("queued")
                 : absl::StrCat("queued again after attempt ", s.attempts());
    case v1::JOB_STATE_WAITING_RETRY:
      return absl::StrCat(
          "waiting to retry after attempt ", s.attempts(),
          s.last_error().empty() ? "" : absl::StrCat(": ", s.last_error()));
    default:
      return absl::AsciiStrToLower(JobStateName(s.state()));
  }
}

}  // namespace

std::string JobStateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_STATE_QUEUED:
      return "QUEUED";
    case v1::JOB_STATE_RUNNING:
      return "RUNNING";
    case v1::JOB_STATE_WAITING_RETRY:
      return "WAITING_RETRY";
    case v1::JOB_STATE_DONE:
      return "DONE";
    case v1::JOB_STATE_GENERATE:
      return "GENERATE";
    case v1::JOB_STATE_CANCELLED:
      return "CANCELLED";
    default:
      return "?";
  }
}

bool IsFinalJobState(v1::JobState state) {
  return state == v1::JOB_STATE_DONE || state == v1::JOB_STATE_GENERATE ||
         state == v1::JOB_STATE_CANCELLED;
}

std::string ProgressCell(const v1::JobStatus& s) {
  if (s.size() == 0) {
    return s.bytes_verified() == 0 ? "-" : HumanBytes(s.bytes_verified());
  }
  return absl::StrCat(HumanBytes(s.bytes_verified()), "/",
                      HumanBytes(s.size()), " ", Percent(s), "%");
}

std::string ShortSources(const v1::JobStatus& s) {
  if (s.current_sources().empty()) return "-";
  std::vector<std::string> ids;
  for (const std::string& id : s.current_sources()) ids.push_back(ShortId(id));
  return absl::StrJoin(ids, ",");
}

std::string ProgressBarLine(const v1::JobStatus& s, int columns) {
  std::string head = absl::StrCat("job ", ShortId(s.job_id()), " ");
  if (s.state() != v1::JOB_STATE_RUNNING) {
    return Fit(absl::StrCat(head, NotRunning(s)), columns);
  }
  if (s.size() == 0 && s.bytes_verified() == 0) {
    return Fit(absl::StrCat(head, "starting"), columns);
  }
  const int pct = Percent(s);
  std::string tail = absl::StrFormat(
      " %s  %s  %s", pct < 0 ? std::string("  ?%") : absl::StrFormat("%3d%%", pct),
      s.size() == 0 ? HumanBytes(s.bytes_verified())
                    : absl::StrCat(HumanBytes(s.bytes_verified()), "/",
                                   HumanBytes(s.size())),
      Throughput(s.bytes_per_sec()));
  if (!s.current_sources().empty()) absl::StrAppend(&tail, "  from ", ShortSources(s));
  int bar = columns - 1 - static_cast<int>(head.size() + tail.size()) - 2;
  bar = std::clamp(bar, kMinBarWidth, kMaxBarWidth);
  int filled = pct < 0 ? 0 : bar * pct / 100;
  std::string line = absl::StrCat(head, "[", std::string(filled, '#'),
                                  std::string(bar - filled, '.'), "]", tail);
  return Fit(std::move(line), columns);
}

std::string ProgressLogLine(const v1::JobStatus& s) {
  std::string line = absl::StrCat("job ", ShortId(s.job_id()), " ");
  if (s.state() != v1::JOB_STATE_RUNNING) {
    return absl::StrCat(line, NotRunning(s));
  }
  if (s.size() == 0 && s.bytes_verified() == 0) {
    return absl::StrCat(line, "running: starting");
  }
  absl::StrAppend(&line, "running: ", HumanBytes(s.bytes_verified()));
  if (s.size() != 0) {
    absl::StrAppend(&line, " of ", HumanBytes(s.size()), " (", Percent(s),
                    "%)");
  }
  if (s.bytes_per_sec() != 0) {
    absl::StrAppend(&line, ", ", Throughput(s.bytes_per_sec()));
  }
  if (!s.current_sources().empty()) {
    absl::StrAppend(&line, ", from ", ShortSources(s));
  }
  return line;
}

ProgressReporter::ProgressReporter(std::ostream& err, bool terminal,
                                   absl::Duration log_interval)
    : err_(err),
      terminal_(terminal),
      columns_(terminal ? TerminalColumns() : kDefaultColumns),
      log_interval_(log_interval) {}

ProgressReporter::~ProgressReporter() { Clear(); }

void ProgressReporter::Update(const v1::JobStatus& s) {
  if (IsFinalJobState(s.state())) return;
  const absl::Time now = absl::Now();
  const bool changed = s.job_id() != last_job_ || s.state() != last_state_;
  if (terminal_) {
    if (!changed && now - last_ < kRedrawInterval) return;
    err_ << "\r\x1b[K" << ProgressBarLine(s, columns_) << std::flush;
    drawn_ = true;
  } else {
    if (!changed && now - last_ < log_interval_) return;
    err_ << kProgram << ": " << ProgressLogLine(s) << std::endl;
  }
  last_ = now;
  last_job_ = s.job_id();
  last_state_ = s.state();
}

void ProgressReporter::Clear() {
  if (!drawn_) return;
  err_ << "\r\x1b[K" << std::flush;
  drawn_ = false;
}

}  // namespace sidecar::ctl
