#include "services/sidecarctl/status_command.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/sidecar_key.h"
#include "services/sidecarctl/commands.h"
#include "services/sidecarctl/format.h"
#include "services/sidecarctl/json_output.h"
#include "services/sidecarctl/progress.h"
#include "sidecar/v1/availability.pb.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::ctl {
namespace {

using Args = std::vector<std::string>;

// Jobs status looks at: enough to count a busy device's recent work, the
// most ListJobs gives.
constexpr uint32_t kJobsLooked = 1000;
// Active jobs and errors shown, newest first; the rest are counted.
constexpr int kShown = 5;
// Width of the label column ("availability" and two spaces).
constexpr int kLabel = 14;
// Missing sidecars counted, at most (ListMissing pages of 10,000).
constexpr uint64_t kMissingCounted = 100000;
constexpr int kMissingPages = 20;

// One call's answer, or why there is none.
template <typename Message>
struct Answer {
  grpc::Status status = grpc::Status(grpc::StatusCode::UNKNOWN, "not asked");
  Message message;
  bool ok() const { return status.ok(); }
};

// What members hold and this device lacks (Availability.ListMissing),
// counted by kind; `complete` unless the count stopped at its bound.
struct Missing {
  uint64_t count = 0;
  bool complete = true;
  std::map<std::string, uint64_t> by_kind;
};

// Everything status asked, from both services.
struct Report {
  Answer<v1::DeviceInfo> device;
  Answer<v1::ListPeersResponse> peers;
  Answer<v1::ListMembersResponse> members;
  Answer<Missing> missing;
  Answer<v1::ListJobsResponse> jobs;
  Answer<v1::GetStoreUsageResponse> store;
  Answer<v1::PrefetchPolicy> prefetch;
  bool availability_reached = true;
  bool transfer_reached = true;
};

// True for the failures that mean the service itself did not answer, as
// opposed to an answer that is an error.
bool Unreachable(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNAVAILABLE ||
         s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
}

bool Unimplemented(const grpc::Status& s) {
  return s.error_code() == grpc::StatusCode::UNIMPLEMENTED;
}

// Makes one unary call with the --timeout deadline into `answer`.
template <typename Stub, typename Request, typename Message, typename Method>
void Ask(CommandContext& ctx, Stub& stub, Method method, const Request& req,
         Answer<Message>* answer) {
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  answer->status = (stub.*method)(&cc, req, &answer->message);
}

// Counts what ListMissing lists, a page at a time (pages may be short and
// still have a token), up to kMissingCounted keys or kMissingPages pages.
void CountMissing(CommandContext& ctx, v1::Availability::Stub& a,
                  Answer<Missing>* out) {
  v1::ListMissingRequest req;
  req.set_page_size(10000);
  Missing& m = out->message;
  for (int page = 0; page < kMissingPages; ++page) {
    Answer<v1::ListMissingResponse> got;
    Ask(ctx, a, &v1::Availability::Stub::ListMissing, req, &got);
    out->status = got.status;
    if (!got.ok()) return;
    for (const v1::SidecarKey& k : got.message.keys()) {
      ++m.count;
      ++m.by_kind[std::string(KindName(k.kind()))];
    }
    if (got.message.next_page_token().empty()) return;
    if (m.count >= kMissingCounted) break;
    req.set_page_token(got.message.next_page_token());
  }
  m.complete = false;
}

// Asks both services. The first call to each tells whether it is there; a
// service that is not is asked nothing more, so that status takes one
// timeout per missing service, not one per call.
Report Gather(CommandContext& ctx) {
  Report r;
  v1::Availability::Stub& a = ctx.availability();
  Ask(ctx, a, &v1::Availability::Stub::GetDevice, v1::GetDeviceRequest(),
      &r.device);
  r.availability_reached = !Unreachable(r.device.status);
  if (r.availability_reached) {
    Ask(ctx, a, &v1::Availability::Stub::ListPeers, v1::ListPeersRequest(),
        &r.peers);
    Ask(ctx, a, &v1::Availability::Stub::ListMembers, v1::ListMembersRequest(),
        &r.members);
    CountMissing(ctx, a, &r.missing);
  } else {
    r.peers.status = r.device.status;
    r.members.status = r.device.status;
    r.missing.status = r.device.status;
  }

  v1::Transfer::Stub& t = ctx.transfer();
  v1::ListJobsRequest jobs;
  jobs.set_limit(kJobsLooked);
  Ask(ctx, t, &v1::Transfer::Stub::ListJobs, jobs, &r.jobs);
  r.transfer_reached = !Unreachable(r.jobs.status);
  if (r.transfer_reached) {
    Ask(ctx, t, &v1::Transfer::Stub::GetStoreUsage, v1::GetStoreUsageRequest(),
        &r.store);
    Ask(ctx, t, &v1::Transfer::Stub::GetPrefetchPolicy,
        v1::GetPrefetchPolicyRequest(), &r.prefetch);
  } else {
    r.store.status = r.jobs.status;
    r.prefetch.status = r.jobs.status;
  }
  return r;
}

// Reports every failed call on stderr (once per unreachable service) and
// returns the exit status: kExitRpcError if anything failed that status
// cannot do without.
int ReportErrors(CommandContext& ctx, const Report& r) {
  int rc = kExitOk;
  auto availability = [&](absl::string_view what, const grpc::Status& s) {
    if (!s.ok()) rc = ctx.AvailabilityError(what, s);
  };
  auto transfer = [&](absl::string_view what, const grpc::Status& s) {
    if (!s.ok() && !Unimplemented(s)) rc = ctx.TransferError(what, s);
  };
  availability("status: device", r.device.status);
  if (r.availability_reached) {
    availability("status: peers", r.peers.status);
    availability("status: members", r.members.status);
    availability("status: missing", r.missing.status);
  }
  transfer("status: jobs", r.jobs.status);
  if (r.transfer_reached) {
    transfer("status: store", r.store.status);
    transfer("status: prefetch", r.prefetch.status);
  }
  return rc;
}

// ---- text -------------------------------------------------------------

// Writes status's text on ctx.out(): a column of labels, then each part,
// coloured only if ctx.out_in_colour().
class Screen {
 public:
  explicit Screen(CommandContext& ctx)
      : ctx_(ctx), colour_(ctx.out_in_colour()) {}

  // "label       text"
  void Line(absl::string_view label, absl::string_view text) {
    ctx_.out() << absl::StrFormat("%-*s%s", kLabel, label, text) << "\n";
  }
  // `text` in colour `c` if this screen is coloured.
  std::string Paint(absl::string_view text, Colour c) const {
    return ::sidecar::ctl::Paint(text, c, colour_);
  }
  // The lines for a service that did not answer: which, where, and how to
  // start it (`binary` is its program).
  void Unreachable(absl::string_view service, absl::string_view address,
                   absl::string_view binary) {
    Line(service, absl::StrCat(Paint(absl::StrCat("the ", service,
                                                  " service is unreachable"),
                                     Colour::kRed),
                               " at ", address));
    Line("", absl::StrCat("start it: ", binary, " --state_dir=",
                          ctx_.state_dir(), " ... (README, \"The ", service,
                          " service\"), or point --state_dir or --", service,
                          " at where it runs"));
  }
  // The line of a part whose call failed otherwise.
  void Failed(absl::string_view label, const grpc::Status& s) {
    Line(label, Paint(absl::StrCat("error: ", StatusCodeName(s.error_code()),
                                   ": ", s.error_message()),
                      Colour::kRed));
  }

 private:
  CommandContext& ctx_;
  const bool colour_;
};

void ShowDevice(Screen& screen, const v1::DeviceInfo& d) {
  screen.Line(
      "device",
      absl::StrCat(screen.Paint(d.name().empty() ? "(no name)" : d.name(),
                                Colour::kBold),
                   " ", d.device_id(), "  peer address ",
                   d.peer_address().empty() ? "-" : d.peer_address()));
}

// Members of the library this device has no peer entry for: never
// contacted from here (learned through another member, and not reached).
std::vector<const v1::Member*> NeverContacted(
    const v1::ListPeersResponse& peers,
    const v1::ListMembersResponse& members) {
  // A peer not reached yet has no device id, only the address it was
  // given: the member it stands for is listed already.
  absl::flat_hash_set<std::string> ids, addresses;
  for (const v1::PeerInfo& p : peers.peers()) {
    ids.insert(p.device_id());
    addresses.insert(p.peer_address());
  }
  std::vector<const v1::Member*> out;
  for (const v1::Member& m : members.members()) {
    if (m.self() || m.removed() || ids.contains(m.device_id()) ||
        (!m.peer_address().empty() && addresses.contains(m.peer_address()))) {
      continue;
    }
    out.push_back(&m);
  }
  return out;
}

void ShowPeers(Screen& screen, const v1::ListPeersResponse& peers,
               const v1::ListMembersResponse& members) {
  const std::vector<const v1::Member*> never = NeverContacted(peers, members);
  int online = 0;
  for (const v1::PeerInfo& p : peers.peers()) online += p.online() ? 1 : 0;
  if (peers.peers().empty() && never.empty()) {
    screen.Line("members",
                screen.Paint("none: this device is alone (sidecarctl "
                             "pair invite / pair join)",
                             Colour::kYellow));
    return;
  }
  const int offline =
      peers.peers_size() - online + static_cast<int>(never.size());
  screen.Line("members",
              absl::StrCat(online, " online, ", offline, " offline"));
  const absl::Time now = absl::Now();
  for (const v1::PeerInfo& p : peers.peers()) {
    std::string name = p.name();
    if (name.empty()) {
      name = p.device_id().empty() ? p.peer_address() : ShortId(p.device_id());
    }
    std::string line = absl::StrCat(
        screen.Paint(absl::StrFormat("%-7s", p.online() ? "online" : "offline"),
                     p.online() ? Colour::kGreen : Colour::kYellow),
        "  last contact ", Ago(p.last_contact(), now));
    if (!p.online() && !p.last_error().empty()) {
      absl::StrAppend(&line, "  (", p.last_error(), ")");
    }
    screen.Line(absl::StrCat("  ", name), line);
  }
  for (const v1::Member* m : never) {
    screen.Line(absl::StrCat("  ", m->name().empty() ? ShortId(m->device_id())
                                                     : m->name()),
                absl::StrCat(screen.Paint("offline", Colour::kYellow),
                             "  never contacted from this device"));
  }
}

void ShowMissing(Screen& screen, const Missing& m) {
  if (m.count == 0) {
    screen.Line("missing", "none: this device holds all its members advertise");
    return;
  }
  std::vector<std::string> kinds;
  for (const auto& [kind, n] : m.by_kind)
    kinds.push_back(absl::StrCat(kind, " ", n));
  screen.Line("missing", absl::StrCat(m.complete ? "" : "at least ", m.count,
                                      " sidecar", m.count == 1 ? "" : "s",
                                      " members hold and this device lacks (",
                                      absl::StrJoin(kinds, ", "),
                                      "; sidecarctl missing lists them)"));
}

bool IsActive(const v1::JobStatus& j) { return !IsFinalJobState(j.state()); }

void ShowJobs(Screen& screen, const v1::ListJobsResponse& jobs) {
  static constexpr std::array<v1::JobState, 6> kStates = {
      v1::JOB_STATE_QUEUED, v1::JOB_STATE_RUNNING,  v1::JOB_STATE_WAITING_RETRY,
      v1::JOB_STATE_DONE,   v1::JOB_STATE_GENERATE, v1::JOB_STATE_CANCELLED};
  std::vector<std::string> counts;
  for (v1::JobState state : kStates) {
    int64_t n = std::count_if(
        jobs.jobs().begin(), jobs.jobs().end(),
        [state](const v1::JobStatus& j) { return j.state() == state; });
    counts.push_back(absl::StrCat(n, " ", JobStateName(state)));
  }
  screen.Line("jobs", absl::StrCat(absl::StrJoin(counts, ", "), "  (newest ",
                                   jobs.jobs_size(), ")"));
  int shown = 0, active = 0;
  for (const v1::JobStatus& j : jobs.jobs()) {
    if (!IsActive(j)) continue;
    if (++active > kShown) continue;
    ++shown;
    screen.Line(absl::StrCat("  ", ShortId(j.job_id())),
                absl::StrCat(JobStateName(j.state()), "  ", UriOf(j.key()),
                             "  ", ProgressCell(j)));
  }
  if (active == 0) {
    screen.Line("", "fetching nothing now");
  } else if (active > shown) {
    screen.Line("", absl::StrCat("and ", active - shown,
                                 " more active (sidecarctl jobs --active)"));
  }
}

void ShowStore(Screen& screen, const Answer<v1::GetStoreUsageResponse>& a) {
  if (Unimplemented(a.status)) {
    screen.Line("store",
                "no quota (this transfer service does not report store use)");
    return;
  }
  if (!a.ok()) {
    screen.Failed("store", a.status);
    return;
  }
  const v1::GetStoreUsageResponse& u = a.message;
  std::string line = absl::StrCat("used ", HumanBytes(u.used_bytes()));
  if (u.quota_bytes() == 0) {
    absl::StrAppend(&line, ", no quota");
  } else {
    const uint64_t percent = u.used_bytes() * 100 / u.quota_bytes();
    absl::StrAppend(&line, " of quota ",
                    screen.Paint(absl::StrCat(HumanBytes(u.quota_bytes()), " (",
                                              percent, "%)"),
                                 percent >= 100  ? Colour::kRed
                                 : percent >= 90 ? Colour::kYellow
                                                 : Colour::kGreen));
  }
  absl::StrAppend(&line, "; ", HumanBytes(u.free_bytes()),
                  " free on the filesystem");
  screen.Line("store", line);
  if (!u.last_error().empty()) {
    screen.Line("", screen.Paint(absl::StrCat("last error: ", u.last_error()),
                                 Colour::kRed));
  }
}

void ShowPrefetch(Screen& screen, const Answer<v1::PrefetchPolicy>& a) {
  if (Unimplemented(a.status)) {
    screen.Line("prefetch", "unknown (this transfer service has no policy)");
    return;
  }
  if (!a.ok()) {
    screen.Failed("prefetch", a.status);
    return;
  }
  const v1::PrefetchPolicy& p = a.message;
  // The service pauses prefetch for one reason only: a metered link.
  std::string state = p.paused()
                          ? screen.Paint(
                                "paused: this device's link is metered "
                                "(prefetch set prefetch_when_metered=yes "
                                "lifts it)",
                                Colour::kYellow)
                          : screen.Paint("active", Colour::kGreen);
  screen.Line(
      "prefetch",
      absl::StrCat(state, "; ", p.running_prefetch(), " of at most ",
                   p.max_concurrent_prefetch(), " running; rules ",
                   p.rules().empty() ? "none (every kind lazy)" : p.rules()));
}

// The jobs that went wrong, newest first: every GENERATE (all sources
// failed or none had it), and active jobs that hit an error and retry.
void ShowLastErrors(Screen& screen, const v1::ListJobsResponse& jobs) {
  std::vector<const v1::JobStatus*> failed;
  for (const v1::JobStatus& j : jobs.jobs()) {
    if (j.state() == v1::JOB_STATE_GENERATE ||
        (IsActive(j) && !j.last_error().empty())) {
      failed.push_back(&j);
    }
  }
  if (failed.empty()) {
    screen.Line("last errors", "none");
    return;
  }
  screen.Line("last errors",
              absl::StrCat(failed.size(), " job", failed.size() == 1 ? "" : "s",
                           failed.size() > kShown
                               ? absl::StrCat(", the newest ", kShown)
                               : std::string()));
  for (size_t i = 0; i < failed.size() && i < kShown; ++i) {
    const v1::JobStatus& j = *failed[i];
    const std::string& why =
        j.last_error().empty() ? j.reason() : j.last_error();
    screen.Line(
        absl::StrCat("  ", ShortId(j.job_id())),
        absl::StrCat(JobStateName(j.state()), "  ", UriOf(j.key()), "  ",
                     screen.Paint(why.empty() ? "-" : why, Colour::kRed)));
  }
}

void ShowText(CommandContext& ctx, const Report& r) {
  Screen screen(ctx);
  if (!r.availability_reached) {
    screen.Unreachable("availability", ctx.availability_address(),
                       "sidecar-availability");
  } else {
    if (r.device.ok()) {
      ShowDevice(screen, r.device.message);
    } else {
      screen.Failed("device", r.device.status);
    }
    if (r.peers.ok()) {
      // Without the members (an error shown below), the peers alone.
      ShowPeers(screen, r.peers.message,
                r.members.ok() ? r.members.message : v1::ListMembersResponse());
      if (!r.members.ok()) screen.Failed("", r.members.status);
    } else {
      screen.Failed("members", r.peers.status);
    }
    if (r.missing.ok()) {
      ShowMissing(screen, r.missing.message);
    } else {
      screen.Failed("missing", r.missing.status);
    }
  }
  if (!r.transfer_reached) {
    screen.Unreachable("transfer", ctx.transfer_address(), "sidecar-transfer");
    return;
  }
  if (r.jobs.ok()) {
    ShowJobs(screen, r.jobs.message);
  } else {
    screen.Failed("jobs", r.jobs.status);
  }
  ShowStore(screen, r.store);
  ShowPrefetch(screen, r.prefetch);
  if (r.jobs.ok()) ShowLastErrors(screen, r.jobs.message);
}

// ---- JSON -------------------------------------------------------------

// The message's JSON if the call worked, else null.
template <typename Message>
std::string JsonOrNull(const Answer<Message>& a) {
  return a.ok() ? MessageJson(a.message) : "null";
}

// {"count": N, "complete": bool, "by_kind": {"thumb": N, ...}}
std::string MissingJson(const Missing& m) {
  JsonObject kinds;
  for (const auto& [kind, n] : m.by_kind) kinds.Add(kind, absl::StrCat(n));
  JsonObject o;
  o.Add("count", absl::StrCat(m.count));
  o.Add("complete", m.complete ? "true" : "false");
  o.Add("by_kind", kinds.ToString());
  return o.ToString();
}

std::string JobsByStateJson(const v1::ListJobsResponse& jobs) {
  JsonObject o;
  for (int s = v1::JobState_MIN; s <= v1::JobState_MAX; ++s) {
    if (s == v1::JOB_STATE_UNSPECIFIED || !v1::JobState_IsValid(s)) continue;
    int64_t n =
        std::count_if(jobs.jobs().begin(), jobs.jobs().end(),
                      [s](const v1::JobStatus& j) { return j.state() == s; });
    o.Add(v1::JobState_Name(static_cast<v1::JobState>(s)), absl::StrCat(n));
  }
  return o.ToString();
}

// {"reachable": bool, "address": "..."} and the error of its first call.
std::string ServiceJson(bool reached, absl::string_view address,
                        const grpc::Status& first, absl::string_view service,
                        absl::Duration timeout) {
  JsonObject o;
  o.Add("reachable", reached ? "true" : "false");
  o.Add("address", JsonString(address));
  if (!reached) {
    o.Add("error",
          JsonString(DescribeRpcError(first, service, address, timeout)));
  }
  return o.ToString();
}

// "CODE: message" of every call that failed, by part; the calls not made
// to a service that did not answer are left out.
std::string ErrorsJson(const Report& r) {
  JsonObject o;
  auto add = [&o](absl::string_view part, const grpc::Status& s) {
    if (s.ok()) return;
    o.Add(part, JsonString(absl::StrCat(StatusCodeName(s.error_code()), ": ",
                                        s.error_message())));
  };
  add("device", r.device.status);
  if (r.availability_reached) {
    add("peers", r.peers.status);
    add("members", r.members.status);
    add("missing", r.missing.status);
  }
  add("jobs", r.jobs.status);
  if (r.transfer_reached) {
    add("store", r.store.status);
    add("prefetch", r.prefetch.status);
  }
  return o.ToString();
}

void ShowJson(CommandContext& ctx, const Report& r) {
  JsonObject o;
  o.Add("availability",
        ServiceJson(r.availability_reached, ctx.availability_address(),
                    r.device.status, "availability", ctx.timeout()));
  o.Add("transfer", ServiceJson(r.transfer_reached, ctx.transfer_address(),
                                r.jobs.status, "transfer", ctx.timeout()));
  o.Add("device", JsonOrNull(r.device));
  o.Add("peers", JsonOrNull(r.peers));
  o.Add("members", JsonOrNull(r.members));
  o.Add("missing", r.missing.ok() ? MissingJson(r.missing.message) : "null");
  o.Add("jobs_by_state",
        r.jobs.ok() ? JobsByStateJson(r.jobs.message) : "null");
  o.Add("jobs", JsonOrNull(r.jobs));
  o.Add("store", JsonOrNull(r.store));
  o.Add("prefetch", JsonOrNull(r.prefetch));
  o.Add("errors", ErrorsJson(r));
  ctx.PrintJson(o.ToString());
}

int RunStatus(CommandContext& ctx, const Args&) {
  const Report r = Gather(ctx);
  if (ctx.json()) {
    ShowJson(ctx, r);
  } else {
    ShowText(ctx, r);
  }
  return ReportErrors(ctx, r);
}

}  // namespace

std::vector<CommandSpec> StatusCommands() {
  std::vector<CommandSpec> c;
  c.push_back(
      {.name = "status",
       .summary =
           "is sync working here? this device, members, what is missing, "
           "jobs, store, prefetch, last errors",
       .details =
           "Asks both services of the device: the availability service for "
           "this device, its\nmembers (online or offline, last contact) and "
           "what "
           "they hold that this device\nlacks (counted by kind), the "
           "transfer service for its jobs\n(counted by state among the "
           "newest 1000; those active now), the store's use\nagainst its "
           "quota, the prefetch policy (paused or not, and why) and the "
           "jobs\nthat failed last. A service that does not answer is named "
           "with how to start it,\nthe other's part is still shown, and the "
           "exit status is 1. Colour only on a\nterminal, and not with "
           "NO_COLOR set.",
       .run = RunStatus});
  return c;
}

}  // namespace sidecar::ctl
