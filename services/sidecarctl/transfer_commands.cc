#include "services/sidecarctl/transfer_commands.h"

#include <algorithm>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "common/bytes_format.h"
#include "common/request_limits.h"
#include "common/sidecar_key.h"
#include "common/transport.h"
#include "services/sidecarctl/commands.h"
#include "services/sidecarctl/format.h"
#include "services/sidecarctl/json_output.h"
#include "services/sidecarctl/progress.h"

ABSL_FLAG(std::string, priority, "normal",
          "fetch: interactive (a person waits), normal or prefetch "
          "(background)");
ABSL_FLAG(bool, no_wait, false,
          "fetch: print the job ids and return without following the jobs");
ABSL_FLAG(bool, active, false,
          "jobs: only jobs still queued, running or waiting to retry");
ABSL_DECLARE_FLAG(int64_t, limit);  // commands.cc

namespace sidecar::ctl {
namespace {

using Args = std::vector<std::string>;

// Length of a job id (a hyphenated UUID); shorter arguments are prefixes.
constexpr size_t kJobIdLength = 36;
// A WatchJob call is re-opened after this long. The first message of a call
// is the job's current status, so re-opening also catches an end that a
// call may have missed; a call that brings no message at all in this time
// means the service does not answer.
constexpr absl::Duration kWatchWindow = absl::Seconds(10);

// The call in progress, for an interrupt to cancel. Thread-safe.
class CallSlot {
 public:
  // `cc` is cancelled at once if an interrupt came already.
  void Set(grpc::ClientContext* cc) {
    absl::MutexLock lock(&mu_);
    current_ = cc;
    if (interrupted_) cc->TryCancel();
  }
  void Reset() {
    absl::MutexLock lock(&mu_);
    current_ = nullptr;
  }
  void Interrupt() {
    absl::MutexLock lock(&mu_);
    interrupted_ = true;
    if (current_ != nullptr) current_->TryCancel();
  }
  bool interrupted() {
    absl::MutexLock lock(&mu_);
    return interrupted_;
  }

 private:
  absl::Mutex mu_;
  grpc::ClientContext* current_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool interrupted_ ABSL_GUARDED_BY(mu_) = false;
};

// Writes one line of fetch's text; nothing with --json, whose document
// comes at the end.
void PrintOutcome(CommandContext& ctx, absl::string_view word,
                  absl::string_view uri, absl::string_view detail) {
  if (ctx.json()) return;
  ctx.out() << absl::StrFormat("%-9s %s  %s", word, uri, detail) << std::endl;
}

int Interrupted(CommandContext& ctx) {
  ctx.err() << kProgram
            << ": interrupted; queued jobs go on in the transfer service "
               "(\"sidecarctl jobs\" lists them, \"sidecarctl cancel ID\" "
               "stops one)\n";
  return kExitInterrupted;
}

// Follows job `job_id` until it ends, showing its progress on `reporter`
// unless it is null (--json); the final
// status goes to *last. Returns the error of the call that failed (or
// CANCELLED when interrupted).
grpc::Status Follow(CommandContext& ctx, const std::string& job_id,
                    ProgressReporter* reporter, CallSlot& slot,
                    v1::JobStatus* last) {
  while (true) {
    grpc::ClientContext cc;
    SetDeadline(&cc, kWatchWindow);
    slot.Set(&cc);
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    std::unique_ptr<grpc::ClientReader<v1::JobStatus>> reader =
        ctx.transfer().WatchJob(&cc, req);
    v1::JobStatus st;
    bool got_any = false;
    bool final = false;
    while (reader->Read(&st)) {
      got_any = true;
      *last = st;
      if (IsFinalJobState(st.state())) {
        final = true;
        cc.TryCancel();  // the service ends the call too; no need to wait
        break;
      }
      if (reporter != nullptr) reporter->Update(st);
    }
    grpc::Status s = reader->Finish();
    slot.Reset();
    if (final) return grpc::Status::OK;
    if (slot.interrupted()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "interrupted");
    }
    if (s.ok() ||
        (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && got_any)) {
      continue;  // still running: watch again
    }
    if (s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      return grpc::Status(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          absl::StrCat("sent nothing about job ", job_id, " within ",
                       absl::FormatDuration(kWatchWindow)));
    }
    return s;
  }
}

// ---- fetch ----------------------------------------------------------------

int RunFetch(CommandContext& ctx, const Args& args) {
  absl::StatusOr<v1::Priority> priority =
      ParsePriorityName(absl::GetFlag(FLAGS_priority));
  if (!priority.ok()) return ctx.UsageError(priority.status().message());
  std::vector<v1::SidecarKey> keys;
  if (int rc = ParseUris(ctx, args, &keys); rc != kExitOk) return rc;

  CallSlot slot;
  InterruptWatcher interrupt([&slot] { slot.Interrupt(); });

  // 1. Ask for every key, kMaxFetchKeysPerRequest at a time.
  std::vector<v1::FetchResult> results;
  // --json: {"results": [FetchResult per key], "jobs": [final JobStatus of
  // each job followed]}.
  std::vector<std::string> followed;  // JSON of each final JobStatus
  auto print_json = [&](int rc) {
    if (ctx.json()) {
      std::vector<std::string> decided;
      for (const v1::FetchResult& r : results) {
        decided.push_back(MessageJson(r));
      }
      ctx.PrintJson(JsonObject()
                        .Add("results", JsonArray(decided))
                        .Add("jobs", JsonArray(followed))
                        .ToString());
    }
    return rc;
  };
  for (size_t i = 0; i < keys.size(); i += kMaxFetchKeysPerRequest) {
    v1::FetchRequest req;
    req.set_priority(*priority);
    for (size_t j = i; j < std::min(keys.size(), i + kMaxFetchKeysPerRequest);
         ++j) {
      *req.add_keys() = keys[j];
    }
    grpc::ClientContext cc;
    ctx.SetCallDeadline(&cc);
    slot.Set(&cc);
    v1::FetchResponse resp;
    grpc::Status s = ctx.transfer().Fetch(&cc, req, &resp);
    slot.Reset();
    if (slot.interrupted()) return Interrupted(ctx);
    if (!s.ok()) {
      if (!results.empty()) {
        ctx.err() << kProgram << ": " << results.size() << " of " << keys.size()
                  << " sidecars were asked for before this failure\n";
      }
      return ctx.TransferError("fetch", s);
    }
    if (resp.results_size() != req.keys_size()) {
      ctx.err() << kProgram << ": fetch: the transfer service answered "
                << resp.results_size() << " results for " << req.keys_size()
                << " sidecars\n";
      return kExitRpcError;
    }
    for (v1::FetchResult& r : *resp.mutable_results()) {
      results.push_back(std::move(r));
    }
  }

  // 2. What the service decided, per key.
  bool not_fetched = false;
  std::vector<size_t> queued;
  for (size_t i = 0; i < results.size(); ++i) {
    const v1::FetchResult& r = results[i];
    const std::string uri = UriOf(keys[i]);
    switch (r.outcome()) {
      case v1::FetchResult::OUTCOME_LOCAL:
        PrintOutcome(ctx, "LOCAL", uri, r.local_path());
        break;
      case v1::FetchResult::OUTCOME_GENERATE:
        PrintOutcome(ctx, "GENERATE", uri, r.reason());
        not_fetched = true;
        break;
      case v1::FetchResult::OUTCOME_QUEUED:
        PrintOutcome(ctx, "QUEUED", uri, absl::StrCat("job ", r.job_id()));
        queued.push_back(i);
        break;
      default:
        PrintOutcome(ctx, "?", uri,
                     absl::StrCat("unknown outcome ", r.outcome(),
                                  " (a newer transfer service?)"));
        not_fetched = true;
        break;
    }
  }
  if (absl::GetFlag(FLAGS_no_wait) || queued.empty()) {
    return print_json(not_fetched ? kExitNotFetched : kExitOk);
  }

  // 3. Follow the jobs one after another (they run in parallel in the
  // service; a job that ended meanwhile reports its end at once).
  // No progress at all with --json: its readers are scripts.
  std::optional<ProgressReporter> reporter;
  if (!ctx.json()) reporter.emplace(ctx.err(), ctx.err_is_terminal());
  for (size_t i : queued) {
    const std::string& id = results[i].job_id();
    v1::JobStatus last;
    grpc::Status s =
        Follow(ctx, id, reporter ? &*reporter : nullptr, slot, &last);
    if (reporter) reporter->Clear();
    if (slot.interrupted()) return Interrupted(ctx);
    if (!s.ok()) {
      return ctx.TransferError(absl::StrCat("following job ", id), s);
    }
    if (ctx.json()) followed.push_back(MessageJson(last));
    const std::string uri = UriOf(keys[i]);
    switch (last.state()) {
      case v1::JOB_STATE_DONE:
        PrintOutcome(
            ctx, "DONE", uri,
            last.reason().empty()
                ? last.local_path()
                : absl::StrCat(last.local_path(), "  (", last.reason(), ")"));
        break;
      case v1::JOB_STATE_GENERATE:
        PrintOutcome(ctx, "GENERATE", uri, last.reason());
        not_fetched = true;
        break;
      default:  // CANCELLED
        PrintOutcome(ctx, JobStateName(last.state()), uri,
                     last.reason().empty() ? "-" : last.reason());
        not_fetched = true;
        break;
    }
  }
  return print_json(not_fetched ? kExitNotFetched : kExitOk);
}

// ---- jobs -----------------------------------------------------------------

// What a person wants to know beyond the numbers: why it ended, or the last
// error of an active job.
std::string JobDetail(const v1::JobStatus& j) {
  const std::string& text =
      IsFinalJobState(j.state()) ? j.reason() : j.last_error();
  return text.empty() ? "-" : text;
}

int RunStore(CommandContext& ctx, const Args&) {
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::GetStoreUsageResponse u;
  grpc::Status s = ctx.transfer().GetStoreUsage(&cc, {}, &u);
  if (!s.ok()) return ctx.TransferError("store", s);
  if (ctx.json()) return ctx.PrintJson(u);
  auto quota = [](uint64_t q) {
    return q == 0 ? std::string("-") : HumanBytes(q);
  };
  std::vector<std::vector<std::string>> rows = {
      {"KIND", "OWN", "OWN BYTES", "FETCHED", "FETCHED BYTES", "QUOTA"}};
  for (const v1::StoreKindUsage& k : u.kinds()) {
    rows.push_back({std::string(::sidecar::KindName(
                        static_cast<::sidecar::Kind>(k.kind()))),
                    absl::StrCat(k.own_count()), HumanBytes(k.own_bytes()),
                    absl::StrCat(k.fetched_count()),
                    HumanBytes(k.fetched_bytes()), quota(k.quota_bytes())});
  }
  PrintTable(ctx.out(), rows);
  ctx.out() << "used " << HumanBytes(u.used_bytes()) << " of quota "
            << (u.quota_bytes() == 0 ? std::string("none")
                                     : HumanBytes(u.quota_bytes()))
            << "; " << HumanBytes(u.free_bytes()) << " free on the filesystem\n"
            << "pinned (generated here, never evicted): "
            << HumanBytes(u.pinned_bytes()) << "\n"
            << "evictable (fetched, while another online device holds them): "
            << HumanBytes(u.evictable_bytes()) << "\n"
            << "evicted since start: " << u.evicted_count() << " ("
            << HumanBytes(u.evicted_bytes())
            << "); kept as last copies: " << u.kept_last_copies() << "\n";
  if (!u.last_error().empty()) {
    ctx.out() << "last error: " << u.last_error() << "\n";
  }
  return kExitOk;
}

void PrintPrefetchPolicy(CommandContext& ctx, const v1::PrefetchPolicy& p) {
  if (ctx.json()) {
    ctx.PrintJson(p);
    return;
  }
  ctx.out() << "rules: "
            << (p.rules().empty() ? std::string("(none: every kind lazy)")
                                  : p.rules())
            << "\n"
            << "max concurrent prefetch: " << p.max_concurrent_prefetch()
            << " (running now: " << p.running_prefetch() << ")\n"
            << "metered: " << (p.metered() ? "yes" : "no")
            << "; prefetch when metered: "
            << (p.prefetch_when_metered() ? "yes" : "no") << "\n"
            << "background limit: "
            << (p.background_bytes_per_sec() == 0
                    ? std::string("none")
                    : absl::StrCat(HumanBytes(p.background_bytes_per_sec()),
                                   "/s"))
            << "\n"
            << "prefetch: " << (p.paused() ? "paused (metered)" : "active")
            << "\n"
            << "source: "
            << (p.stored() ? "stored (set at run time)" : "the service's flags")
            << "\n";
}

std::optional<bool> ParseYesNo(absl::string_view v) {
  if (v == "true" || v == "yes" || v == "on" || v == "1") return true;
  if (v == "false" || v == "no" || v == "off" || v == "0") return false;
  return std::nullopt;
}

int RunPrefetch(CommandContext& ctx, const Args& args) {
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::PrefetchPolicy p;
  if (args.empty()) {
    grpc::Status s = ctx.transfer().GetPrefetchPolicy(&cc, {}, &p);
    if (!s.ok()) return ctx.TransferError("prefetch", s);
    PrintPrefetchPolicy(ctx, p);
    return kExitOk;
  }
  if (args[0] != "set" || args.size() < 2) {
    return ctx.UsageError(
        "use \"prefetch\" to show the policy, or \"prefetch set "
        "KEY=VALUE...\"");
  }
  v1::SetPrefetchPolicyRequest req;
  for (size_t i = 1; i < args.size(); ++i) {
    const size_t eq = args[i].find('=');
    if (eq == std::string::npos) {
      return ctx.UsageError(
          absl::StrCat("\"", args[i], "\": give KEY=VALUE, e.g. metered=yes"));
    }
    const std::string key = args[i].substr(0, eq);
    const std::string value = args[i].substr(eq + 1);
    if (key == "rules") {
      req.set_rules(value);
    } else if (key == "max_concurrent") {
      uint32_t n;
      if (!absl::SimpleAtoi(value, &n)) {
        return ctx.UsageError("max_concurrent takes a number, e.g. 3");
      }
      req.set_max_concurrent_prefetch(n);
    } else if (key == "metered" || key == "prefetch_when_metered") {
      std::optional<bool> b = ParseYesNo(value);
      if (!b) return ctx.UsageError(absl::StrCat(key, " takes yes or no"));
      if (key == "metered") {
        req.set_metered(*b);
      } else {
        req.set_prefetch_when_metered(*b);
      }
    } else if (key == "background_limit") {
      uint64_t n;
      if (!absl::SimpleAtoi(value, &n)) {
        return ctx.UsageError(
            "background_limit takes bytes per second, e.g. 1000000 (0: none)");
      }
      req.set_background_bytes_per_sec(n);
    } else {
      return ctx.UsageError(absl::StrCat(
          "unknown setting \"", key,
          "\"; use rules, max_concurrent, metered, prefetch_when_metered or "
          "background_limit"));
    }
  }
  grpc::Status s = ctx.transfer().SetPrefetchPolicy(&cc, req, &p);
  if (!s.ok()) return ctx.TransferError("prefetch set", s);
  PrintPrefetchPolicy(ctx, p);
  return kExitOk;
}

int RunJobs(CommandContext& ctx, const Args&) {
  const int64_t limit = absl::GetFlag(FLAGS_limit);
  if (limit < 0 || limit > 1000) {
    return ctx.UsageError(
        "--limit must be 0 (the service's default, 100) "
        "to 1000");
  }
  v1::ListJobsRequest req;
  req.set_active_only(absl::GetFlag(FLAGS_active));
  req.set_limit(static_cast<uint32_t>(limit));
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::ListJobsResponse resp;
  grpc::Status s = ctx.transfer().ListJobs(&cc, req, &resp);
  if (!s.ok()) return ctx.TransferError("jobs", s);
  if (ctx.json()) return ctx.PrintJson(resp);
  if (resp.jobs().empty()) {
    ctx.out() << (req.active_only() ? "no active jobs\n" : "no jobs\n");
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"ID", "STATE", "SIDECAR",
                                                 "PROGRESS", "RATE", "ATTEMPTS",
                                                 "LAST ERROR / REASON"}};
  for (const v1::JobStatus& j : resp.jobs()) {
    rows.push_back({ShortId(j.job_id()), JobStateName(j.state()),
                    UriOf(j.key()), ProgressCell(j),
                    j.state() == v1::JOB_STATE_RUNNING
                        ? Throughput(j.bytes_per_sec())
                        : "-",
                    absl::StrCat(j.attempts()), JobDetail(j)});
  }
  PrintTable(ctx.out(), rows);
  ctx.out() << resp.jobs_size() << (resp.jobs_size() == 1 ? " job" : " jobs")
            << ", newest first\n";
  return kExitOk;
}

// ---- cancel ---------------------------------------------------------------

int RunCancel(CommandContext& ctx, const Args& args) {
  std::string id = absl::AsciiStrToLower(args[0]);
  if (id.empty()) return ctx.UsageError("the job id is empty");
  std::string uri;
  if (id.size() < kJobIdLength) {
    // A prefix, e.g. the short id "jobs" shows: find the one job it names.
    v1::ListJobsRequest req;
    req.set_limit(1000);
    grpc::ClientContext cc;
    ctx.SetCallDeadline(&cc);
    v1::ListJobsResponse resp;
    grpc::Status s = ctx.transfer().ListJobs(&cc, req, &resp);
    if (!s.ok()) return ctx.TransferError("cancel", s);
    std::vector<const v1::JobStatus*> found;
    for (const v1::JobStatus& j : resp.jobs()) {
      if (absl::StartsWith(j.job_id(), id)) found.push_back(&j);
    }
    if (found.empty()) {
      ctx.err() << kProgram << ": cancel: NOT_FOUND: no job whose id starts "
                << "with \"" << id << "\" among the newest 1000; "
                << "\"sidecarctl jobs\" lists them\n";
      return kExitRpcError;
    }
    if (found.size() > 1) {
      return ctx.UsageError(absl::StrCat(
          "\"", id, "\" is the start of ", found.size(),
          " job ids; give more of the id (\"sidecarctl jobs\" lists them)"));
    }
    id = found[0]->job_id();
    uri = UriOf(found[0]->key());
  }
  v1::CancelRequest req;
  req.set_job_id(id);
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::CancelResponse resp;
  grpc::Status s = ctx.transfer().Cancel(&cc, req, &resp);
  if (!s.ok()) {
    int rc = ctx.TransferError("cancel", s);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
      ctx.err() << kProgram << ": \"sidecarctl jobs\" lists the jobs\n";
    }
    return rc;
  }
  if (ctx.json()) {
    // CancelResponse has the state only; the id says which job it is.
    return ctx.PrintJson(
        JsonObject()
            .Add("job_id", JsonString(id))
            .Add("state", JsonString(v1::JobState_Name(resp.state())))
            .ToString());
  }
  ctx.out() << "job " << id << (uri.empty() ? "" : absl::StrCat(" (", uri, ")"))
            << ": " << JobStateName(resp.state())
            << "; its partial data is deleted\n";
  return kExitOk;
}

}  // namespace

absl::StatusOr<v1::Priority> ParsePriorityName(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "interactive") return v1::PRIORITY_INTERACTIVE;
  if (n == "normal") return v1::PRIORITY_NORMAL;
  if (n == "prefetch") return v1::PRIORITY_PREFETCH;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown priority \"", name, "\"; use interactive, normal or prefetch"));
}

std::vector<CommandSpec> TransferCommands() {
  std::vector<CommandSpec> c;
  c.push_back(
      {.name = "fetch",
       .synopsis = "URI... [--priority=P] [--no-wait]",
       .summary = "copy sidecars from peers here (transfer service)",
       .details =
           "Per sidecar prints LOCAL PATH (already here), GENERATE REASON "
           "(nobody online has it,\nor this device's strategy says generate) "
           "or QUEUED URI job ID. Then, unless\n--no-wait, follows each job "
           "(progress on stderr: a bar on a terminal, else a line\nper "
           "second) and prints DONE PATH or GENERATE REASON (every source "
           "failed).\nExit status: 0 every sidecar is here (LOCAL or DONE; "
           "with --no-wait also QUEUED),\n3 some sidecar ended GENERATE or "
           "CANCELLED (generate it), 1 a call failed,\n2 usage error, 130 "
           "interrupted (the jobs go on in the service).",
       .flags = {"priority", "no_wait"},
       .min_args = 1,
       .max_args = CommandSpec::kUnlimited,
       .wants_signals = true,
       .run = RunFetch});
  c.push_back({.name = "jobs",
               .synopsis = "[--active] [--limit=N]",
               .summary = "list fetch jobs, newest first (transfer service)",
               .flags = {"active", "limit"},
               .run = RunJobs});
  c.push_back({.name = "store",
               .synopsis = "",
               .summary = "what uses the sidecar store, per kind, and its "
                          "quota (transfer service)",
               .details =
                   "OWN sidecars were generated on this device and are never "
                   "evicted; FETCHED ones\ncame from peers and are evicted, "
                   "least recently used first, when the store\npasses "
                   "--store_quota_bytes or a --store_kind_quotas entry, as "
                   "long as another\nonline device holds them.",
               .run = RunStore});
  c.push_back(
      {.name = "prefetch",
       .synopsis = "[set KEY=VALUE...]",
       .summary = "show or change the prefetch policy (transfer service)",
       .details =
           "Without arguments shows the policy in force. \"set\" changes the "
           "settings given,\nstores them (they win over the service's flags "
           "from then on, across restarts)\nand applies them at once:\n"
           "  rules=KIND[/VARIANT]=eager|lazy|never,...  e.g.\n"
           "      rules=thumb/grid@2x=eager,thumb=lazy,proxy=never\n"
           "    eager: prefetched as soon as a peer has it; lazy: fetched on "
           "request only;\n    never: not prefetched, and prefetch-priority "
           "requests are refused. A variant\n    rule overrides its kind's; "
           "a kind without a rule is lazy. rules= clears all.\n"
           "  max_concurrent=N            prefetch attempts at once (a batch "
           "counts as one)\n"
           "  metered=yes|no              this device's link; prefetch pauses "
           "while metered\n"
           "  prefetch_when_metered=yes|no\n"
           "  background_limit=BYTES      per second for prefetch (0: none)\n"
           "Queued prefetch jobs that are no longer eager are cancelled.",
       .max_args = CommandSpec::kUnlimited,
       .run = RunPrefetch});
  c.push_back({.name = "cancel",
               .synopsis = "JOB_ID",
               .summary = "cancel a fetch job and delete its partial data",
               .details =
                   "JOB_ID may be the start of an id, e.g. the 8 characters "
                   "\"jobs\" shows, if only one\nof the newest 1000 jobs "
                   "starts so. A job that already ended is not changed\n"
                   "(FAILED_PRECONDITION, exit 1).",
               .min_args = 1,
               .max_args = 1,
               .run = RunCancel});
  return c;
}

}  // namespace sidecar::ctl
