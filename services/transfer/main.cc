// sidecar-transfer: serves this device's sidecars to peers and fetches
// missing ones from them, verified, resumable and retried.
#include <algorithm>
#include <atomic>
#include <filesystem>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/device_key.h"
#include "common/log.h"
#include "common/peer_channels.h"
#include "common/peer_trust.h"
#include "common/readiness.h"
#include "common/service_flags.h"
#include "common/state_dir.h"
#include "common/thread_pool.h"
#include "common/transport.h"
#include "services/transfer/availability_client.h"
#include "services/transfer/bandwidth.h"
#include "services/transfer/evictor.h"
#include "services/transfer/fetcher.h"
#include "services/transfer/job_events.h"
#include "services/transfer/job_store.h"
#include "services/transfer/local_index.h"
#include "services/transfer/member_follower.h"
#include "services/transfer/peer_server.h"
#include "services/transfer/policy.h"
#include "services/transfer/prefetch_control.h"
#include "services/transfer/prefetch_gate.h"
#include "services/transfer/prefetch_rules.h"
#include "services/transfer/prefetcher.h"
#include "services/transfer/store_quota.h"
#include "services/transfer/store_writer.h"
#include "services/transfer/transfer_metrics.h"
#include "services/transfer/transfer_service.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7200",
          "host:port of the peer listener (TransferPeer): mutual TLS, paired "
          "devices only (port 0: any)");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port peers should use to reach this transfer service, told "
          "to the availability service (default: the listen address with the "
          "bound port; host 0.0.0.0 becomes the host name)");
ABSL_FLAG(absl::Duration, members_interval, absl::Seconds(1),
          "how often the library's members are read from the availability "
          "service (a device unpaired is refused within this)");
ABSL_FLAG(std::string, port_file, "",
          "if set, write the bound port here once serving");
ABSL_FLAG(std::string, db, "",
          "PostgreSQL connection string (libpq) of the transfer job database");
ABSL_FLAG(absl::Duration, db_connect_timeout, absl::Seconds(30),
          "how long to wait for PostgreSQL at start-up");
ABSL_FLAG(std::string, sidecar_root, "./sidecars",
          "directory holding this device's sidecars (the same as the "
          "availability service's)");
ABSL_FLAG(std::string, availability, "",
          "local API address of this device's availability service (default: "
          "unix:<state_dir>/availability.sock)");
ABSL_FLAG(absl::Duration, rpc_timeout, absl::Seconds(5),
          "deadline of calls to the availability service");
ABSL_FLAG(int, workers, 3, "fetch jobs run at once");
ABSL_FLAG(int, batch_lanes, 4,
          "batches of small sidecars (thumbnails...) fetched at once");
ABSL_FLAG(int, batch_max_jobs, 1000, "sidecars per batch");
ABSL_FLAG(absl::Duration, batch_yield_after, absl::Seconds(1),
          "a batch paused this long for foreground work finishes early and "
          "gives its unreceived jobs back to the queue");
ABSL_FLAG(int, max_attempts, 5, "attempts of a job before it ends in GENERATE");
ABSL_FLAG(absl::Duration, retry_initial_backoff, absl::Milliseconds(200),
          "wait before the second attempt; doubles per attempt, with jitter");
ABSL_FLAG(absl::Duration, retry_max_backoff, absl::Seconds(30),
          "longest wait between attempts");
ABSL_FLAG(uint64_t, multi_source_min_bytes, 32ull << 20,
          "sidecars this large are fetched from several holders at once");
ABSL_FLAG(uint64_t, piece_bytes, 2ull << 20,
          "piece size of multi-source fetches");
ABSL_FLAG(int, max_sources, 3, "holders used at once by one fetch");
ABSL_FLAG(uint32_t, chunk_bytes, 0,
          "chunk size asked of peers (0: the serving side's choice)");
ABSL_FLAG(absl::Duration, stall_timeout, absl::Seconds(10),
          "a source that sends nothing this long is abandoned");
ABSL_FLAG(double, bandwidth_limit, 0,
          "bytes per second all fetches may use together (0: unlimited)");
ABSL_FLAG(double, background_bandwidth_limit, 0,
          "bytes per second prefetch may use (0: what foreground work "
          "leaves); prefetch always yields to interactive and normal "
          "fetches");
ABSL_FLAG(int, interactive_workers, 2,
          "workers that take only interactive jobs, so that they start at "
          "once");
ABSL_FLAG(std::string, store_quota_bytes, "0",
          "the most this device's sidecars may use (e.g. 20G; 0: no quota); "
          "above it fetched sidecars are evicted, least recently used first");
ABSL_FLAG(std::string, store_kind_quotas, "",
          "quotas per kind, comma-separated KIND:SIZE (e.g. "
          "thumb:2G,proxy:20G)");
ABSL_FLAG(bool, evict_last_copies, false,
          "let the store quota evict a fetched sidecar that no other online "
          "device holds");
ABSL_FLAG(absl::Duration, store_usage_interval, absl::Seconds(10),
          "how often the store's usage is read and the quota enforced");
ABSL_FLAG(uint64_t, min_free_bytes, 64ull << 20,
          "a fetch that would leave less free space on the store fails");
ABSL_FLAG(std::string, strategy, "prefer-fetch",
          "prefer-fetch, generate-cheap or unmetered-only");
ABSL_FLAG(bool, metered, false,
          "this device is on a metered link: prefetch pauses (see "
          "--prefetch_when_metered, --strategy); initial value, settable at "
          "run time (sidecarctl prefetch set --metered)");
ABSL_FLAG(std::string, cheap_kinds, "thumb",
          "kinds generated locally under --strategy=generate-cheap");
ABSL_FLAG(int, io_threads, 4, "threads reading files for peers");
ABSL_FLAG(std::string, prefetch_kinds, "thumb",
          "kinds fetched eagerly as soon as a peer advertises them "
          "(comma-separated; empty: no prefetch); --prefetch_rules, if set, "
          "replaces it");
ABSL_FLAG(std::string, prefetch_rules, "",
          "prefetch policy per kind and variant, comma-separated "
          "KIND[/VARIANT]=eager|lazy|never (e.g. "
          "thumb/grid@2x=eager,thumb=lazy,proxy=never); a variant rule "
          "overrides its kind's, a kind without a rule is lazy. Initial "
          "value: a policy set with SetPrefetchPolicy (sidecarctl prefetch "
          "set) is stored and wins at later starts");
ABSL_FLAG(int, max_concurrent_prefetch, 3,
          "prefetch attempts running at once (a batch counts as one); "
          "initial value, as --prefetch_rules");
ABSL_FLAG(bool, prefetch_when_metered, false,
          "keep prefetching while --metered (default: prefetch pauses); "
          "initial value, as --prefetch_rules");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "on SIGTERM, how long in-flight calls may finish");
ABSL_FLAG(bool, verbose, false, "log debug messages");

namespace sidecar::transfer {
namespace {

int Main() {
  SetLogTag("transfer");
  if (absl::Status s = SetLogFormatFromFlags(); !s.ok()) {
    SC_LOG(ERROR) << s.message();
    return 2;
  }
  EnableMetricsFromFlags();  // before any server or channel is made
  // A signal before serving ends the process at once (nothing to drain).
  StartupSignalWatch startup_signals;
  if (absl::GetFlag(FLAGS_verbose)) SetMinLogLevel(LogLevel::kDebug);
  if (absl::GetFlag(FLAGS_db).empty()) {
    SC_LOG(ERROR) << "--db (or SIDECAR_DB) is required: a PostgreSQL "
                     "connection string for the transfer jobs";
    return 2;
  }
  absl::StatusOr<FetchPolicy> policy = FetchPolicy::Make(
      absl::GetFlag(FLAGS_strategy), absl::GetFlag(FLAGS_metered),
      absl::GetFlag(FLAGS_cheap_kinds));
  if (!policy.ok()) {
    SC_LOG(ERROR) << policy.status();
    return 2;
  }
  std::error_code ec;
  std::filesystem::path root =
      std::filesystem::absolute(absl::GetFlag(FLAGS_sidecar_root), ec);
  std::filesystem::create_directories(root, ec);
  const std::string state_dir = StateDirFromFlags();
  if (DeviceKey::Absent(state_dir)) {
    SC_LOG(ERROR) << "no device key in " << state_dir
                  << ": the availability service makes it on its first "
                     "start; start it first, or point --state_dir at its "
                     "state directory";
    return 1;
  }
  absl::StatusOr<DeviceKey> key = DeviceKey::Load(state_dir);
  if (!key.ok()) {
    SC_LOG(ERROR) << "cannot use the device key: " << key.status().message();
    return 1;
  }
  std::string availability_address = absl::GetFlag(FLAGS_availability);
  if (availability_address.empty()) {
    availability_address = LocalSocketAddress(state_dir, "availability");
  }

  absl::StatusOr<std::unique_ptr<JobStore>> jobs = JobStore::Open(
      absl::GetFlag(FLAGS_db), absl::GetFlag(FLAGS_db_connect_timeout));
  if (!jobs.ok()) {
    SC_LOG(ERROR) << "cannot open the job database: " << jobs.status();
    return 1;
  }
  if (absl::StatusOr<uint64_t> n = (*jobs)->RequeueRunning(); n.ok() && *n) {
    SC_LOG(INFO) << *n << " interrupted job(s) will resume";
  }
  absl::StatusOr<std::unique_ptr<StoreWriter>> store =
      StoreWriter::Open(root.string());
  if (!store.ok()) {
    SC_LOG(ERROR) << "cannot use the sidecar root: " << store.status();
    return 1;
  }
  // Partial files of jobs that no longer exist (crash between commit and
  // bookkeeping, cancelled jobs) are removed; active jobs resume from theirs.
  if (absl::StatusOr<std::vector<std::string>> active = (*jobs)->ActiveIds();
      active.ok()) {
    absl::flat_hash_set<std::string> ids(active->begin(), active->end());
    absl::StatusOr<uint64_t> removed = (*store)->CleanupStray(ids);
    if (removed.ok() && *removed > 0) {
      SC_LOG(INFO) << "removed " << *removed << " stray partial file(s)";
    }
  }

  AvailabilityClient availability(availability_address,
                                  absl::GetFlag(FLAGS_rpc_timeout));
  // This service's own series (transfer_metrics.h), if metrics are on.
  std::unique_ptr<TransferMetrics> metrics;
  if (ProcessMetricsSet* m = ProcessMetrics()) {
    metrics = std::make_unique<TransferMetrics>(*m->registry);
    availability.set_metrics(metrics.get());
  }
  absl::StatusOr<uint64_t> quota_total =
      ParseByteSize(absl::GetFlag(FLAGS_store_quota_bytes));
  if (!quota_total.ok()) {
    SC_LOG(ERROR) << "--store_quota_bytes: " << quota_total.status().message();
    return 2;
  }
  absl::StatusOr<QuotaConfig> quota =
      QuotaConfig::Parse(*quota_total, absl::GetFlag(FLAGS_store_kind_quotas));
  if (!quota.ok()) {
    SC_LOG(ERROR) << "--store_kind_quotas: " << quota.status().message();
    return 2;
  }
  std::unique_ptr<Evictor::Backend> evict_backend =
      Evictor::ForAvailability(&availability);
  Evictor evictor(
      Evictor::Options{
          .root = root.string(),
          .quota = *quota,
          .refresh_interval =
              std::max(absl::Milliseconds(10),
                       absl::GetFlag(FLAGS_store_usage_interval)),
          .evict_last_copies = absl::GetFlag(FLAGS_evict_last_copies)},
      evict_backend.get());
  // Files of sidecars withdrawn by an eviction a crash interrupted: deleted
  // before any fetch could bring them back.
  if (absl::StatusOr<uint64_t> n = evictor.Recover(); !n.ok()) {
    SC_LOG(WARNING) << "store quota: interrupted evictions not cleaned up "
                       "(tried again at the next start): "
                    << n.status();
  }
  LocalIndex index(availability_address);
  PeerTrust trust;
  // Set once the follower exists (it needs the bound port to announce).
  std::atomic<MemberFollower*> follower{nullptr};
  trust.set_refresh([&follower] {
    if (MemberFollower* f = follower.load()) (void)f->PollOnce();
  });
  PeerChannels channels(&*key, &trust);
  ThreadPool pool(ThreadPoolOptions{absl::GetFlag(FLAGS_io_threads)});
  PeerServer peer_api(&index, root.string(), &pool);

  Bandwidth bandwidth(absl::GetFlag(FLAGS_bandwidth_limit),
                      absl::GetFlag(FLAGS_background_bandwidth_limit));
  PrefetchPolicy prefetch_defaults{
      .max_concurrent = std::clamp(absl::GetFlag(FLAGS_max_concurrent_prefetch),
                                   0, kMaxConcurrentPrefetchLimit),
      .metered = absl::GetFlag(FLAGS_metered),
      .prefetch_when_metered = absl::GetFlag(FLAGS_prefetch_when_metered),
      .background_bytes_per_sec = static_cast<uint64_t>(
          std::max(0.0, absl::GetFlag(FLAGS_background_bandwidth_limit)))};
  if (std::string rules = absl::GetFlag(FLAGS_prefetch_rules); !rules.empty()) {
    absl::StatusOr<PrefetchRules> parsed = PrefetchRules::Parse(rules);
    if (!parsed.ok()) {
      SC_LOG(ERROR) << "--prefetch_rules: " << parsed.status().message();
      return 2;
    }
    prefetch_defaults.rules = *std::move(parsed);
  } else {
    std::vector<Kind> eager;
    for (absl::string_view k : absl::StrSplit(
             absl::GetFlag(FLAGS_prefetch_kinds), ',', absl::SkipEmpty())) {
      std::optional<Kind> kind = KindFromName(absl::StripAsciiWhitespace(k));
      if (!kind) {
        SC_LOG(ERROR) << "--prefetch_kinds: unknown kind \"" << k << "\"";
        return 2;
      }
      eager.push_back(*kind);
    }
    prefetch_defaults.rules = PrefetchRules::EagerKinds(eager);
  }
  PrefetchGate prefetch_gate(prefetch_defaults.max_concurrent);
  PrefetchControl prefetch_control(prefetch_defaults, jobs->get(),
                                   &prefetch_gate, &bandwidth);
  if (absl::Status s = prefetch_control.Load(); !s.ok()) {
    SC_LOG(ERROR) << "cannot read the stored prefetch policy: " << s;
    return 1;
  }
  JobEvents events;
  FetcherOptions fo;
  fo.workers = absl::GetFlag(FLAGS_workers);
  fo.interactive_workers =
      std::max(0, absl::GetFlag(FLAGS_interactive_workers));
  fo.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  fo.initial_backoff = absl::GetFlag(FLAGS_retry_initial_backoff);
  fo.max_backoff = absl::GetFlag(FLAGS_retry_max_backoff);
  fo.multi_source_min_bytes = absl::GetFlag(FLAGS_multi_source_min_bytes);
  fo.piece_bytes = absl::GetFlag(FLAGS_piece_bytes);
  fo.max_sources = absl::GetFlag(FLAGS_max_sources);
  fo.chunk_bytes = absl::GetFlag(FLAGS_chunk_bytes);
  fo.stall_timeout = absl::GetFlag(FLAGS_stall_timeout);
  fo.min_free_bytes = absl::GetFlag(FLAGS_min_free_bytes);
  fo.batch_lanes = std::max(0, absl::GetFlag(FLAGS_batch_lanes));
  fo.batch_yield_after = absl::GetFlag(FLAGS_batch_yield_after);
  fo.batch_max_jobs =
      static_cast<size_t>(std::max(0, absl::GetFlag(FLAGS_batch_max_jobs)));
  fo.prefetch_gate = &prefetch_gate;
  fo.metrics = metrics.get();
  if (ProcessMetricsSet* m = ProcessMetrics()) {
    TransferMetrics::AddScrapeTimeGauges(m->gauges.get(), jobs->get(),
                                         &evictor);
  }
  if (evictor.enabled()) {
    fo.admit = [&evictor](const Job& job, uint64_t bytes) {
      return evictor.Admit(job.priority, job.key.kind, bytes);
    };
  }
  Fetcher fetcher(fo, jobs->get(), store->get(), &availability, &bandwidth,
                  &events, &channels);
  TransferService local_api(jobs->get(), &fetcher, &availability, &events,
                            *policy);
  local_api.set_store(&evictor, store->get());

  Prefetcher prefetcher(PrefetchOptions{}, &availability, jobs->get(), &fetcher,
                        &*policy, &prefetch_control);
  prefetch_control.set_on_change([&prefetcher, &fetcher] {
    prefetcher.PolicyChanged();
    fetcher.Wake();
  });
  local_api.set_prefetch_control(&prefetch_control);

  ServerHost local_host(LocalListenerFromFlags(state_dir, "transfer"));
  const std::string local_address = local_host.address();
  local_host.AddService(&local_api, "sidecar.v1.Transfer");
  local_host.AddHealthName("sidecar.v1.TransferPeer");  // served by peer_host
  ServerHost peer_host(
      PeerListener{absl::GetFlag(FLAGS_listen), &*key, &trust, {}});
  peer_host.AddService(&peer_api, "sidecar.v1.TransferPeer");
  // With --metrics_members: this service's metrics, for members only.
  std::unique_ptr<MemberMetricsService> member_metrics =
      MemberMetricsServiceFromFlags();
  if (member_metrics) peer_host.AddService(member_metrics.get());
  startup_signals.Disarm();  // from here on a signal drains
  for (ServerHost* h : {&local_host, &peer_host}) {
    if (absl::Status s = h->Start(); !s.ok()) {
      SC_LOG(ERROR) << s.message();
      return 1;
    }
  }
  // Readiness per service name: what an orchestrator asks before sending
  // work (the server as a whole stays SERVING; readiness.h).
  std::unique_ptr<ReadinessMonitor> readiness = StartReadinessFromFlags(
      {DatabaseCheck(absl::GetFlag(FLAGS_db), absl::Seconds(5)),
       WritableCheck("sidecar store", root.string())},
      {&local_host, &peer_host});
  absl::StatusOr<std::unique_ptr<MetricsExporter>> metrics_exporter =
      StartMetricsFromFlags();
  if (!metrics_exporter.ok()) {
    SC_LOG(ERROR) << metrics_exporter.status().message();
    return 1;
  }
  std::string advertise = absl::GetFlag(FLAGS_advertise_address);
  if (advertise.empty() || advertise.ends_with(":0")) {
    advertise = AdvertisedAddress(
        advertise.empty() ? absl::GetFlag(FLAGS_listen) : advertise,
        peer_host.port());
  }
  MemberFollower members(availability.stub(), &trust,
                         absl::GetFlag(FLAGS_members_interval),
                         absl::GetFlag(FLAGS_rpc_timeout), advertise);
  // The members first, so that peers are not refused needlessly.
  if (absl::Status s = members.PollOnce(); !s.ok()) {
    SC_LOG(WARNING) << "the availability service at " << availability_address
                    << " does not answer yet (" << s.message()
                    << "); peers are refused until it does";
  }
  members.Start();
  follower = &members;
  fetcher.Start();
  prefetcher.Start();
  // Prefetch refused at the quota resumes when there is room again.
  evictor.Start([&prefetcher] { prefetcher.CatchUpSoon(); });
  SC_LOG(INFO) << "peer API (mutual TLS) on port " << peer_host.port()
               << "; local API on " << local_address << "; sidecar root "
               << root.string() << ", availability at " << availability_address;
  if (std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (absl::Status s = WritePortFile(pf, peer_host.port()); !s.ok()) {
      SC_LOG(ERROR) << s;
      return 1;
    }
  }
  int sig = local_host.WaitForShutdownSignal();
  absl::Duration drain = absl::GetFlag(FLAGS_drain_timeout);
  SC_LOG(INFO) << "signal " << sig << ": not serving, draining for up to "
               << drain;
  local_host.SetServing(false);
  peer_host.SetServing(false);
  if (*metrics_exporter) (*metrics_exporter)->StopSoon();
  // What the scrape-time gauges read goes away after Main returns.
  if (ProcessMetricsSet* m = ProcessMetrics()) m->gauges->RemoveAll();
  readiness->Stop();
  events.Shutdown();
  prefetcher.Stop();
  follower = nullptr;
  members.Stop();
  evictor.Stop();
  const absl::Time fetcher_stop = absl::Now();
  fetcher.Stop();  // running jobs stay resumable
  SC_LOG(INFO) << "fetcher stopped in " << absl::Now() - fetcher_stop;
  const absl::Time drain_start = absl::Now();
  ServerHost::ShutdownAll({&peer_host, &local_host}, drain);
  SC_LOG(INFO) << "stopped; calls in flight drained in "
               << absl::Now() - drain_start;
  return 0;
}

}  // namespace
}  // namespace sidecar::transfer

int main(int argc, char** argv) {
  sidecar::InitServiceProcess(
      argc, argv,
      "sidecar-transfer: moves sidecars between a person's "
      "devices");
  return sidecar::transfer::Main();
}
