// Logging shared by the Fetcher's parts.
#ifndef SIDECAR_SERVICES_TRANSFER_JOB_LOG_H_
#define SIDECAR_SERVICES_TRANSFER_JOB_LOG_H_

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/log.h"

namespace sidecar::transfer {

// Logs a bookkeeping step that failed but that the fetch goes on without:
// a job row not updated (the job is retried or recovered at the next start)
// or a partial file not deleted (removed at the next start).
inline void WarnIfFailed(const absl::Status& s, absl::string_view job_id,
                         absl::string_view what) {
  if (!s.ok()) SC_LOG(WARNING) << "job " << job_id << ": " << what << ": " << s;
}

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_JOB_LOG_H_
