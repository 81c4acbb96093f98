// sidecar-availability: records what this device has, gossips availability
// with peer devices and answers "who has sidecar X?".
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "common/config.h"
#include "common/log.h"
#include "common/transport.h"
#include "services/availability/availability_service.h"
#include "services/availability/inventory_store.h"
#include "services/availability/local_inventory.h"
#include "services/availability/peer_cache.h"
#include "services/availability/peer_manager.h"
#include "services/availability/peer_service.h"
#include "services/availability/watch_hub.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7100",
          "host:port to serve the local and peer APIs on (port 0: any)");
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
          "comma-separated host:port of peer availability services");
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
          "also contact devices learned through gossip, not only --peers");
ABSL_FLAG(uint32_t, max_message_bytes, 0,
          "bound of one gossip message (0: 1 MiB; clamped to 64 KiB..4 MiB)");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(10),
          "on SIGTERM, how long in-flight calls may finish");
ABSL_FLAG(bool, reset_change_log, false,
          "at start-up, compact the change log into a new generation (peers "
          "then take a snapshot instead of deltas)");
ABSL_FLAG(bool, verbose, false, "log debug messages");

namespace sidecar::availability {
namespace {

std::string PortOf(const std::string& address) {
  size_t colon = address.rfind(':');
  return colon == std::string::npos ? "" : address.substr(colon + 1);
}

std::string WithPort(const std::string& address, int port) {
  size_t colon = address.rfind(':');
  std::string host =
      colon == std::string::npos ? address : address.substr(0, colon);
  if (host == "0.0.0.0" || host == "[::]" || host.empty()) {
    char name[256] = {0};
    gethostname(name, sizeof(name) - 1);
    host = name;
  }
  return absl::StrCat(host, ":", port);
}

int Main() {
  SetLogTag("availability");
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

  absl::StatusOr<std::unique_ptr<InventoryStore>> store = InventoryStore::Open(
      absl::GetFlag(FLAGS_db), absl::GetFlag(FLAGS_db_connect_timeout));
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
  const DeviceIdentity& id = (*store)->identity();
  SC_LOG(INFO) << "device " << id.device_id.ToString() << " generation "
               << id.generation;

  v1::Hello self;
  self.set_device_id(std::string(id.device_id.AsBytes()));
  self.set_generation(id.generation);
  self.set_name(absl::GetFlag(FLAGS_name));
  self.set_transfer_address(absl::GetFlag(FLAGS_transfer_address));

  OriginInfo self_info{id.device_id, "", self.transfer_address(), self.name()};
  WatchHub hub;
  PeerCache cache(self_info, &hub);

  PeerManagerOptions opts;
  opts.peers = absl::GetFlag(FLAGS_peers);
  opts.gossip_interval = absl::GetFlag(FLAGS_gossip_interval);
  opts.gossip_jitter = absl::GetFlag(FLAGS_gossip_jitter);
  opts.prompt_delay = absl::GetFlag(FLAGS_prompt_delay);
  opts.ping_interval = absl::GetFlag(FLAGS_ping_interval);
  opts.offline_after = absl::GetFlag(FLAGS_offline_after);
  opts.rpc_timeout = absl::GetFlag(FLAGS_rpc_timeout);
  opts.exchange_timeout = absl::GetFlag(FLAGS_exchange_timeout);
  opts.contact_learned_peers = absl::GetFlag(FLAGS_contact_learned_peers);
  opts.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  PeerManager peers(opts, &cache, &hub, self);

  LocalInventory inventory(store->get(), &cache,
                           [&peers] { peers.RequestPromptRound(); });
  if (absl::Status s = inventory.Load(); !s.ok()) {
    SC_LOG(ERROR) << "cannot load the inventory: " << s;
    return 1;
  }

  AvailabilityService local_api(
      {store->get(), &inventory, &cache, &peers, &hub, root.string()});
  PeerService peer_api(&cache, &peers);
  ServerHost host(absl::GetFlag(FLAGS_listen));
  host.AddService(&local_api);
  host.AddService(&peer_api);
  startup_signals.Disarm();  // from here on a signal drains
  if (absl::Status s = host.Start(); !s.ok()) {
    SC_LOG(ERROR) << s;
    return 1;
  }
  std::string advertise = absl::GetFlag(FLAGS_advertise_address);
  if (advertise.empty()) {
    advertise = WithPort(absl::GetFlag(FLAGS_listen), host.port());
  } else if (PortOf(advertise) == "0") {
    advertise = WithPort(advertise, host.port());
  }
  peers.SetSelfPeerAddress(advertise);
  cache.NoteOrigin(
      {id.device_id, advertise, self.transfer_address(), self.name()});
  peers.Start();
  SC_LOG(INFO) << "serving on port " << host.port() << ", advertised as "
               << advertise << ", sidecar root " << root.string();
  if (std::string pf = absl::GetFlag(FLAGS_port_file); !pf.empty()) {
    if (absl::Status s = WritePortFile(pf, host.port()); !s.ok()) {
      SC_LOG(ERROR) << s;
      return 1;
    }
  }
  int sig = host.WaitForShutdownSignal();
  absl::Duration drain = absl::GetFlag(FLAGS_drain_timeout);
  SC_LOG(INFO) << "signal " << sig << ": not serving, draining for up to "
               << drain;
  host.SetServing(false);
  hub.Shutdown();  // Watch streams would otherwise hold the drain open
  peers.Stop();
  host.Shutdown(drain);
  SC_LOG(INFO) << "stopped";
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
