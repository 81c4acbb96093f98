// How sidecarctl shows the progress of fetch jobs: words for job states, a
// progress cell for tables, and a ProgressReporter that follows one job at a
// time on stderr, as a bar redrawn in place on a terminal or as plain lines
// now and then otherwise (logs, pipes, CI).
#ifndef SIDECAR_SERVICES_SIDECARCTL_PROGRESS_H_
#define SIDECAR_SERVICES_SIDECARCTL_PROGRESS_H_

#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::ctl {

// "QUEUED", "RUNNING", "WAITING_RETRY", "DONE", "GENERATE", "CANCELLED";
// "?" for anything else.
std::string JobStateName(v1::JobState state);
// True for DONE, GENERATE and CANCELLED.
bool IsFinalJobState(v1::JobState state);
// "45.1 KiB/100.0 KiB 45%" once the size is known, "12.0 KiB" before, "-"
// when nothing is known yet.
std::string ProgressCell(const v1::JobStatus& s);
// Device ids shortened (ShortId) and joined by ","; "-" if none.
std::string ShortSources(const v1::JobStatus& s);

// One line of a terminal progress display, at most `columns` wide, e.g.
//   job 1a2b3c4d [########........]  45%  45.1 KiB/100.0 KiB  1.2 MiB/s  from 3f2a1b4c
// or for a job that is not running, its state and last error.
std::string ProgressBarLine(const v1::JobStatus& s, int columns);
// One line for a log, e.g.
//   job 1a2b3c4d running: 45.1 KiB of 100.0 KiB (45%), 1.2 MiB/s, from 3f2a1b4c
std::string ProgressLogLine(const v1::JobStatus& s);

// Shows a job's statuses as they arrive. On a terminal, redraws one line
// (at most every 100 ms); otherwise writes a line when the state changes and
// at most every `log_interval` while it stays. Writes nothing for a final
// state: the caller reports the outcome. Not thread-safe.
class ProgressReporter {
 public:
  ProgressReporter(std::ostream& err, bool terminal,
                   absl::Duration log_interval = absl::Seconds(1));
  ~ProgressReporter();  // Clear()

  void Update(const v1::JobStatus& s);
  // Erases the terminal line, if one is drawn, so other output can follow.
  void Clear();

 private:
  std::ostream& err_;
  const bool terminal_;
  const int columns_;
  const absl::Duration log_interval_;
  bool drawn_ = false;
  absl::Time last_ = absl::InfinitePast();
  std::string last_job_;
  v1::JobState last_state_ = v1::JOB_STATE_UNSPECIFIED;
};

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_PROGRESS_H_
