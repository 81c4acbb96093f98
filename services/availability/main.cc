// sidecar-availability: records what this device has, gossips availability
// with peer devices and answers "who has sidecar X?".
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/bytes_format.h"
#include "common/config.h"
#include "common/device_key.h"
#include "common/log.h"
#include "common/peer_trust.h"
#include "common/readiness.h"
#include "common/service_flags.h"
#include "common/state_dir.h"
#include "common/thread_pool.h"
#include "common/thread_priority.h"
#include "common/transport.h"
#include "services/availability/availability_metrics.h"
#include "services/availability/availability_service.h"
#include "services/availability/delegation.h"
#include "services/availability/fork_healer.h"
#include "services/availability/inventory_store.h"
#include "services/availability/library.h"
#include "services/availability/local_inventory.h"
#include "services/availability/log_compactor.h"
#include "services/availability/log_mark.h"
#include "services/availability/pairing.h"
#include "services/availability/peer_cache.h"
#include "services/availability/peer_manager.h"
#include "services/availability/peer_service.h"
#include "services/availability/self_snapshot.h"
#include "services/availability/subscription.h"
#include "services/availability/watch_hub.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7100",
          "host:port of the peer listener: mutual TLS, paired devices only "
          "(port 0: any)");
ABSL_FLAG(std::string, port_file, "",
          "if set, write the bound port here once serving");
ABSL_FLAG(std::string, db, "",
          "PostgreSQL connection string (libpq), e.g. "
          "\"host=127.0.0.1 port=5432 dbname=sidecar user=postgres\"");
ABSL_FLAG(absl::Duration, db_connect_timeout, absl::Seconds(30),
          "how long to wait for PostgreSQL at start-up");
ABSL_FLAG(std::string, sidecar_root, "./sidecars",
          "directory holding this device's sidecars in the content/ layout");
ABSL_FLAG(std::vector<std::string>, peers, {},
          "comma-separated host:port of other devices' availability services, "
          "tried by `sidecarctl pair join CODE` without an address");
ABSL_FLAG(std::string, join, "",
          "CODE@host:port: pair with the device that made CODE at start-up "
          "(for containers; ignored once paired with it)");
ABSL_FLAG(std::string, name, "", "human-readable device name");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port peers should use to reach this service (default: the "
          "listen address, with the bound port)");
ABSL_FLAG(std::string, transfer_address, "",
          "host:port of this device's transfer service, told to peers");
ABSL_FLAG(absl::Duration, gossip_interval, absl::Minutes(5),
          "period of full gossip rounds with each peer");
ABSL_FLAG(double, gossip_jitter, 0.2,
          "random spread of the gossip period, as a fraction");
ABSL_FLAG(absl::Duration, prompt_delay, absl::Milliseconds(500),
          "delay of the prompt round after local changes (debounce)");
ABSL_FLAG(absl::Duration, ping_interval, absl::Seconds(5),
          "period of liveness pings to each peer");
ABSL_FLAG(absl::Duration, offline_after, absl::Seconds(20),
          "a peer without successful contact this long is marked offline");
ABSL_FLAG(absl::Duration, rpc_timeout, absl::Seconds(5),
          "deadline of pings and direct queries to peers");
ABSL_FLAG(absl::Duration, exchange_timeout, absl::Seconds(120),
          "deadline of one gossip exchange (large snapshots take longer)");
ABSL_FLAG(bool, contact_learned_peers, true,
          "contact every member of the library, not only the devices paired "
          "with this one directly");
ABSL_FLAG(uint32_t, max_message_bytes, 0,
          "bound of one gossip message (0: 1 MiB; clamped to 64 KiB..4 MiB)");
ABSL_FLAG(absl::Duration, usage_flush_interval, absl::Seconds(30),
          "how often uses of local sidecars (Resolve answered LOCAL) are "
          "written to the database, in one batch (the store quota's "
          "least-recently-used order)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "on SIGTERM, how long in-flight calls may finish");
ABSL_FLAG(bool, reset_change_log, false,
          "at start-up, compact the change log into a new generation (peers "
          "then take a snapshot instead of deltas)");
ABSL_FLAG(uint64_t, max_entries_per_origin,
          sidecar::availability::kMaxEntriesPerOrigin,
          "entries cached per other device; a peer's answer that would "
          "exceed it is refused (RESOURCE_EXHAUSTED)");
ABSL_FLAG(absl::Duration, tombstone_retention, absl::Hours(72),
          "change-log compaction keeps withdrawn sidecars' tombstones this "
          "long: a peer last in contact longer ago gets a snapshot instead "
          "of deltas");
ABSL_FLAG(absl::Duration, compaction_check_interval, absl::Seconds(30),
          "how often to check whether the change log needs compaction "
          "(more than 1.5 rows per live sidecar, or old tombstones)");
ABSL_FLAG(std::string, profile, "full",
          "full: mirror what every peer has (a desktop, a home server); "
          "leaf: a phone, which mirrors only --subscribe_kinds of each "
          "peer's own sidecars within --leaf_cache_bytes, asks a full member "
          "(--delegate) about the rest, and is pinged rarely");
ABSL_FLAG(std::string, subscribe_kinds, "thumb",
          "leaf: kinds of the peers' sidecars to mirror, e.g. thumb,ocr "
          "(empty: none)");
ABSL_FLAG(std::string, subscribe_variants, "",
          "leaf: only these variants of the subscribed kinds, e.g. grid@2x "
          "(empty: all)");
ABSL_FLAG(std::string, leaf_cache_bytes, "8M",
          "leaf: memory for mirrored entries of all peers together; a peer "
          "with more subscribed entries is not mirrored but asked about");
ABSL_FLAG(std::string, delegate, "",
          "leaf: the member (name or device id) to ask first about who has "
          "a sidecar, best an always-on one; empty: the online full member "
          "that knows the most devices, the nearest among equals");
ABSL_FLAG(absl::Duration, delegate_cache_ttl, absl::Seconds(30),
          "leaf: how long a delegated answer is reused");
ABSL_FLAG(absl::Duration, leaf_ping_interval, absl::Seconds(60),
          "how often a leaf pings its peers, and is pinged by them (battery)");
ABSL_FLAG(absl::Duration, leaf_prompt_delay, absl::Seconds(30),
          "how long after a change here a leaf peer is prompted (a busy "
          "device wakes a phone at most this often)");
ABSL_FLAG(bool, start_snapshot, true,
          "keep a snapshot of this device's own sidecars in the state "
          "directory (own_origin.snapshot), written at shutdown, and start "
          "from it, reading only newer change-log rows from the database");
ABSL_FLAG(bool, verbose, false, "log debug messages");

namespace sidecar::availability {
namespace {

std::string PortOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? "" : address.substr(colon + 1);
}

// --join=CODE@ADDRESS: pairs once at start-up, retrying while the inviter
// is not reachable yet (containers start together). A refusal is final.
void JoinAtStart(const std::string& spec, Pairing* pairing, Library* library,
                 absl::Duration timeout, const std::atomic<bool>* stop) {
  size_t at = spec.find('@');
  if (at == std::string::npos) {
    SC_LOG(ERROR) << "--join must be CODE@host:port";
    return;
  }
  const std::string code = spec.substr(0, at);
  const std::string address = spec.substr(at + 1);
  if (library->List(false).size() > 1) {
    SC_LOG(INFO) << "--join ignored: already paired";
    return;
  }
  for (int attempt = 0; attempt < 60 && !stop->load(); ++attempt) {
    absl::StatusOr<Pairing::JoinResult> r =
        pairing->Join(code, {address}, timeout);
    if (r.ok()) {
      SC_LOG(INFO) << "paired with " << r->inviter.name << " at " << address;
      return;
    }
    SC_LOG(WARNING) << "pairing with " << address << ": " << r.status();
    if (r.status().code() != absl::StatusCode::kUnavailable &&
        r.status().code() != absl::StatusCode::kDeadlineExceeded) {
      return;
    }
    absl::SleepFor(absl::Seconds(1));
  }
}

// The device key, made on the first start. A database that belongs to a
// paired device whose key is gone is not given a new identity silently.
absl::StatusOr<DeviceKey> LoadDeviceKey(const std::string& state_dir,
                                        const std::string& conninfo,
                                        absl::Duration connect_timeout) {
  if (!DeviceKey::Absent(state_dir)) return DeviceKey::Load(state_dir);
  absl::StatusOr<std::optional<Uuid>> paired =
      InventoryStore::PairedDevice(conninfo, connect_timeout);
  if (!paired.ok()) return paired.status();
  if (paired->has_value()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the database belongs to device ", (*paired)->ToString(),
        ", paired in a library, but its key is not in ", state_dir,
        ": restore ", kDeviceKeyFile, " and ", kDeviceCertFile,
        " from a backup (or fix --state_dir); to make this a new device "
        "instead, use a fresh database"));
  }
  return DeviceKey::Create(state_dir, absl::GetFlag(FLAGS_name));
}

// Starts a new generation when the database is behind the change-log mark
// of the state directory: it went back in time (a restored backup), so the
// seqs it would hand out are ones peers believe they have seen.
absl::Status ResetIfBehindMark(InventoryStore* store,
                               const std::string& state_dir) {
  const std::string path = absl::StrCat(state_dir, "/", kLogMarkFile);
  absl::StatusOr<std::optional<LogPosition>> mark = ReadLogMark(path);
  if (!mark.ok()) {
    SC_LOG(WARNING) << "change-log mark ignored: " << mark.status().message();
    return absl::OkStatus();
  }
  if (!mark->has_value()) return absl::OkStatus();
  absl::StatusOr<uint64_t> max_seq = store->MaxSeq();
  if (!max_seq.ok()) return max_seq.status();
  LogPosition db{store->identity().generation, *max_seq};
  if (!IsBehind(db, **mark)) return absl::OkStatus();
  SC_LOG(WARNING) << "the database's change log (generation " << db.generation
                  << ", seq " << db.max_seq << ") is behind what this device "
                  << "had reached (generation " << (*mark)->generation
                  << ", seq " << (*mark)->max_seq
                  << "): restored from a backup? Starting a new generation";
  absl::StatusOr<DeviceIdentity> reset = store->ResetChangeLog();
  return reset.status();
}

// Rows a start may read from the change log before a snapshot is written
// right away (about 0.1 s of loading; writing takes less).
constexpr uint64_t kSnapshotAfterRows = 100000;

// Writes the own origin's snapshot; a failure is logged and otherwise
// harmless (the next start reads the change log instead).
void WriteSnapshotLogged(LocalInventory* inventory, absl::string_view when) {
  const absl::Time start = absl::Now();
  absl::StatusOr<bool> written = inventory->WriteSnapshot();
  if (!written.ok()) {
    SC_LOG(WARNING) << "own-origin snapshot not written " << when << ": "
                    << written.status();
  } else if (*written) {
    SC_LOG(INFO) << "own-origin snapshot written " << when << " in "
                 << absl::Now() - start;
  } else {
    SC_LOG(INFO) << "own-origin snapshot " << when
                 << ": the file already holds this state";
  }
}

int Main() {
  SetLogTag("availability");
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
                     "connection string";
    return 2;
  }
  std::error_code ec;
  std::filesystem::path root =
      std::filesystem::absolute(absl::GetFlag(FLAGS_sidecar_root), ec);
  std::filesystem::create_directories(root, ec);
  const std::string state_dir = StateDirFromFlags();
  const absl::Duration connect_timeout =
      absl::GetFlag(FLAGS_db_connect_timeout);

  absl::StatusOr<DeviceKey> key =
      LoadDeviceKey(state_dir, absl::GetFlag(FLAGS_db), connect_timeout);
  if (!key.ok()) {
    SC_LOG(ERROR) << "cannot use the device key: " << key.status().message();
    return 1;
  }
  absl::StatusOr<std::unique_ptr<InventoryStore>> store = InventoryStore::Open(
      absl::GetFlag(FLAGS_db), connect_timeout, key->device_id());
  if (!store.ok()) {
    SC_LOG(ERROR) << "cannot open the inventory database: " << store.status();
    return 1;
  }
  if (absl::GetFlag(FLAGS_reset_change_log)) {
    absl::StatusOr<DeviceIdentity> reset = (*store)->ResetChangeLog();
    if (!reset.ok()) {
      SC_LOG(ERROR) << "cannot reset the change log: " << reset.status();
      return 1;
    }
    SC_LOG(INFO) << "change log reset: new generation " << reset->generation;
  }
  if (absl::Status s = ResetIfBehindMark(store->get(), state_dir); !s.ok()) {
    SC_LOG(ERROR) << "cannot start a new generation: " << s;
    return 1;
  }
  const DeviceIdentity& id = (*store)->identity();
  if (id.replaced_device_id) {
    SC_LOG(WARNING) << "device id " << id.replaced_device_id->ToString()
                    << " replaced by " << id.device_id.ToString()
                    << ", derived from the device key; sidecars kept, new "
                       "generation "
                    << id.generation;
  }
  SC_LOG(INFO) << "device " << id.device_id.ToString() << " generation "
               << id.generation << ", key fingerprint "
               << key->certificate().Fingerprint() << ", state in "
               << state_dir;

  const std::string profile = absl::GetFlag(FLAGS_profile);
  if (profile != "full" && profile != "leaf") {
    SC_LOG(ERROR) << "--profile must be full or leaf, not \"" << profile
                  << "\"";
    return 2;
  }
  const bool leaf = profile == "leaf";
  absl::StatusOr<SubscriptionSpec> subscription =
      ParseSubscriptionSpec(absl::GetFlag(FLAGS_subscribe_kinds),
                            absl::GetFlag(FLAGS_subscribe_variants));
  absl::StatusOr<uint64_t> leaf_bytes =
      ParseByteSize(absl::GetFlag(FLAGS_leaf_cache_bytes));
  if (!subscription.ok() || !leaf_bytes.ok()) {
    SC_LOG(ERROR) << (subscription.ok() ? leaf_bytes.status().message()
                                        : subscription.status().message());
    return 2;
  }
  // What one mirrored entry costs in memory: the entry and its share of
  // the table's slack.
  const size_t leaf_entries = *leaf_bytes / kLeafBytesPerEntry;

  v1::Hello self;
  self.set_leaf(leaf);
  self.set_device_id(std::string(id.device_id.AsBytes()));
  self.set_generation(id.generation);
  self.set_name(absl::GetFlag(FLAGS_name));
  self.set_transfer_address(absl::GetFlag(FLAGS_transfer_address));

  OriginInfo self_info{id.device_id, "", self.transfer_address(), self.name()};
  WatchHub hub;
  size_t max_per_origin =
      static_cast<size_t>(absl::GetFlag(FLAGS_max_entries_per_origin));
  if (leaf) max_per_origin = std::min(max_per_origin, leaf_entries);
  PeerCache cache(self_info, &hub, max_per_origin);
  cache.set_signer(
      [&key](absl::string_view statement) { return key->Sign(statement); });
  PeerTrust trust;
  Library library(&*key, store->get(), &trust, self.name());

  PeerManagerOptions opts;
  opts.gossip_interval = absl::GetFlag(FLAGS_gossip_interval);
  opts.gossip_jitter = absl::GetFlag(FLAGS_gossip_jitter);
  opts.prompt_delay = absl::GetFlag(FLAGS_prompt_delay);
  opts.ping_interval = absl::GetFlag(FLAGS_ping_interval);
  opts.offline_after = absl::GetFlag(FLAGS_offline_after);
  opts.rpc_timeout = absl::GetFlag(FLAGS_rpc_timeout);
  opts.exchange_timeout = absl::GetFlag(FLAGS_exchange_timeout);
  opts.contact_learned_peers = absl::GetFlag(FLAGS_contact_learned_peers);
  opts.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  opts.leaf_ping_interval = absl::GetFlag(FLAGS_leaf_ping_interval);
  opts.leaf_prompt_delay = absl::GetFlag(FLAGS_leaf_prompt_delay);
  if (leaf) {
    opts.leaf = true;
    opts.subscription = *subscription;
    opts.leaf_cache_entries = leaf_entries;
    // A phone wakes for its peers rarely: pings at the leaf interval, and
    // a peer is offline after two missed ones.
    opts.ping_interval = std::max(opts.ping_interval, opts.leaf_ping_interval);
    opts.offline_after = std::max(opts.offline_after, opts.ping_interval * 2.5);
  }
  // This service's own series (availability_metrics.h), if metrics are on;
  // made before the peers, which count in them until they stop.
  std::unique_ptr<AvailabilityMetrics> metrics;
  if (ProcessMetricsSet* m = ProcessMetrics()) {
    metrics = std::make_unique<AvailabilityMetrics>(*m->registry);
  }
  PeerManager peers(opts, &cache, &hub, self, &library, &*key);
  if (metrics) {
    peers.set_metrics(metrics.get());
    AvailabilityMetrics::AddScrapeTimeGauges(ProcessMetrics()->gauges.get(),
                                             &peers, &cache);
  }
  library.set_listener(
      [&peers](const Library::Change& c) { peers.OnLibraryChange(c); });
  if (absl::Status s = library.Load(); !s.ok()) {
    SC_LOG(ERROR) << "cannot load the library's members: " << s;
    return 1;
  }
  Pairing pairing(&*key, &library, [&peers] { return peers.SelfHello(); });

  // The healer keeps the change-log mark; it exists once the inventory does.
  std::atomic<ForkHealer*> mark_keeper{nullptr};
  LocalInventory inventory(
      store->get(), &cache,
      [&peers, &mark_keeper] {
        peers.RequestPromptRound();
        if (ForkHealer* h = mark_keeper.load()) h->NoteChange();
      },
      [&key, &id](uint64_t generation) {
        return key->Sign(GenerationStatement(id.device_id, generation));
      });
  const bool snapshots = absl::GetFlag(FLAGS_start_snapshot);
  if (snapshots) {
    inventory.set_snapshot_path(
        absl::StrCat(state_dir, "/", kSelfSnapshotFile));
  }
  if (absl::Status s = inventory.Load(); !s.ok()) {
    SC_LOG(ERROR) << "cannot load the inventory: " << s;
    return 1;
  }
  // A start that read many rows from the database writes a snapshot at
  // once, in the background, so that the next start is fast even if this
  // run ends in a crash rather than a shutdown.
  // (A jthread: joined on every return.)
  std::jthread snapshot_thread;
  if (snapshots && inventory.rows_loaded() >= kSnapshotAfterRows) {
    snapshot_thread = std::jthread([&inventory] {
      (void)LowerThisThreadPriority(kBackgroundNice);
      WriteSnapshotLogged(&inventory, "after a slow start");
    });
  }
  LogCompactor compactor(
      &inventory,
      {.check_interval =
           std::max(absl::Milliseconds(10),
                    absl::GetFlag(FLAGS_compaction_check_interval)),
       .tombstone_retention = absl::GetFlag(FLAGS_tombstone_retention)});
  compactor.Start();
  ForkHealer healer(
      &inventory, &cache,
      [&peers](uint64_t generation) { peers.SetSelfGeneration(generation); },
      absl::StrCat(state_dir, "/", kLogMarkFile));
  mark_keeper = &healer;
  const SelfViewListener on_self_view = [&healer](const Uuid& peer,
                                                  const DigestEntry& view) {
    healer.OnPeerView(peer, view);
  };
  peers.set_self_view_listener(on_self_view);

  UsageRecorder usage(
      store->get(),
      {.flush_interval = std::max(absl::Milliseconds(10),
                                  absl::GetFlag(FLAGS_usage_flush_interval))});
  usage.Start();

  AvailabilityService::Deps deps{
      store->get(), &inventory, &cache,
      &peers,       &hub,       root.string(),
      &library,     &pairing,   absl::GetFlag(FLAGS_peers)};
  deps.join_timeout = absl::GetFlag(FLAGS_rpc_timeout) * 2;
  deps.transfer_address_fixed = !absl::GetFlag(FLAGS_transfer_address).empty();
  deps.usage = &usage;
  std::optional<Delegation> delegation;
  if (leaf) {
    delegation.emplace(
        DelegationOptions{.preferred = absl::GetFlag(FLAGS_delegate),
                          .ttl = absl::GetFlag(FLAGS_delegate_cache_ttl),
                          .timeout = absl::GetFlag(FLAGS_rpc_timeout)},
        &peers, &library);
    deps.delegation = &*delegation;
    deps.mirror_budget_entries = leaf_entries;
  }
  AvailabilityService local_api(deps);
  // Exchange answers are planned and encoded here, at background priority.
  ThreadPool exchange_encoder({.threads = 1, .nice = kBackgroundNice});
  PeerService peer_api(&cache, &peers, &library, &pairing, &exchange_encoder);
  peer_api.set_self_view_listener(on_self_view);
  peer_api.set_leaf(leaf);
  ServerHost local_host(LocalListenerFromFlags(state_dir, "availability"));
  const std::string local_address = local_host.address();
  local_host.AddService(&local_api, "sidecar.v1.Availability");
  local_host.AddHealthName("sidecar.v1.Peer");  // served by peer_host
  ServerHost peer_host(PeerListener{
      absl::GetFlag(FLAGS_listen), &*key, &trust, {PeerService::kOpenMethod}});
  peer_host.AddService(&peer_api, "sidecar.v1.Peer");
  // With --metrics_members: this service's metrics, for members only, and
  // (below) every member's, relayed at /members/metrics.
  std::unique_ptr<MemberMetricsService> member_metrics =
      MemberMetricsServiceFromFlags();
  if (member_metrics) peer_host.AddService(member_metrics.get());
  PeerChannels member_channels(&*key, &trust);
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
      {DatabaseCheck(absl::GetFlag(FLAGS_db), absl::Seconds(5))},
      {&local_host, &peer_host});
  absl::StatusOr<std::unique_ptr<MetricsExporter>> metrics_exporter =
      StartMetricsFromFlags();
  if (!metrics_exporter.ok()) {
    SC_LOG(ERROR) << metrics_exporter.status().message();
    return 1;
  }
  if (*metrics_exporter && member_metrics) {
    (*metrics_exporter)
        ->Serve(std::make_shared<MemberMetricsRelay>(
                    [&peers] { return MemberEndpointsOf(peers.List()); },
                    &member_channels),
                "/members/metrics");
  }
  std::string advertise = absl::GetFlag(FLAGS_advertise_address);
  if (advertise.empty()) {
    advertise =
        AdvertisedAddress(absl::GetFlag(FLAGS_listen), peer_host.port());
  } else if (PortOf(advertise) == "0") {
    advertise = AdvertisedAddress(advertise, peer_host.port());
  }
  peers.SetSelfPeerAddress(advertise);
  cache.NoteOrigin(
      {id.device_id, advertise, self.transfer_address(), self.name()});
  library.NoteAddresses(id.device_id, advertise, self.transfer_address());
  // The signed head of the own state (a digest over every entry: about
  // 65 ms per million) is made now, in the background, rather than by the
  // first Exchange a peer asks for.
  exchange_encoder.Schedule([&cache] { cache.SignedSelfView(); });
  peers.Start();
  if (leaf) {
    SC_LOG(INFO) << "leaf profile: mirroring " << leaf_entries
                 << " entries at most (--leaf_cache_bytes), kinds \""
                 << absl::GetFlag(FLAGS_subscribe_kinds) << "\"; lookups "
                 << "beyond them go to "
                 << (absl::GetFlag(FLAGS_delegate).empty()
                         ? std::string(
                               "the full member that knows the most devices")
                         : absl::GetFlag(FLAGS_delegate));
  }
  SC_LOG(INFO) << "peer API (mutual TLS) on port " << peer_host.port()
               << ", advertised as " << advertise << "; local API on "
               << local_address << "; sidecar root " << root.string();
  std::atomic<bool> stop_join{false};
  std::thread join_thread;
  if (std::string join = absl::GetFlag(FLAGS_join); !join.empty()) {
    join_thread = std::thread([&, join] {
      JoinAtStart(join, &pairing, &library, deps.join_timeout, &stop_join);
    });
  }
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
  hub.Shutdown();  // Watch streams would otherwise hold the drain open
  stop_join = true;
  if (join_thread.joinable()) join_thread.join();
  const absl::Time peers_stop = absl::Now();
  peers.Stop();
  mark_keeper = nullptr;
  healer.Stop();
  SC_LOG(INFO) << "peers stopped in " << absl::Now() - peers_stop;
  const absl::Time drain_start = absl::Now();
  ServerHost::ShutdownAll({&peer_host, &local_host}, drain);
  SC_LOG(INFO) << "stopped; calls in flight drained in "
               << absl::Now() - drain_start;
  compactor.Stop();
  usage.Stop();  // the last uses
  if (snapshot_thread.joinable()) snapshot_thread.join();
  // Nothing changes the own origin any more: the next start reads this.
  if (snapshots) WriteSnapshotLogged(&inventory, "at shutdown");
  return 0;
}

}  // namespace
}  // namespace sidecar::availability

int main(int argc, char** argv) {
  sidecar::InitServiceProcess(
      argc, argv,
      "sidecar-availability: who has which sidecar, across "
      "a person's devices");
  return sidecar::availability::Main();
}
