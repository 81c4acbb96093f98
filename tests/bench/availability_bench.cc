// Benchmarks of the availability service with real processes, a real
// PostgreSQL and real gRPC on loopback, each figure beside a baseline
// measured in the same run:
//
//  1. initial exchange of N sidecars from device A to an empty device B,
//     end to end (B's launch until B answers with all N), against a raw TCP
//     copy of the same number of bytes on loopback;
//  2. bytes on the wire of a gossip round with nothing changed;
//  3. WhoHas for 10,000 keys against a 1M-entry cache: time in the server
//     (trailing metadata), at the client, and an empty RPC (GetDevice) as
//     the transport floor, plus an in-process hash map lookup of the keys;
//  4. B's resident memory per cached entry (RSS with N entries minus RSS of
//     an identical empty device).
//
//   availability_bench --scales=1000000,6000000
//
// --bench=busy: device B's local API latency (WhoHas of 100 keys and a
// single-key Resolve, sampled every few milliseconds) idle, while B receives
// a snapshot of N entries from A, and while B sends that snapshot on to a
// fresh device C, side by side in one run:
//
//   availability_bench --bench=busy --busy_entries=1000000
//
// --bench=start: a device holding N sidecars, from its launch until its
// local API answers and until it serves its own state (a WhoHas of its last
// key lists it), starting from its own-origin snapshot and, alternately,
// with --start_snapshot=false (every change-log row), beside reading the
// same rows with SELECT count(*) and with a binary COPY that does nothing
// with them:
//
//   availability_bench --bench=start --start_entries=1000000,6000000
//
// --bench=churn: change-log rows, live sidecars and table bytes of a device
// of N sidecars before and after every sidecar is replaced --churn_rounds
// times (and some removed), with compaction running as in production but
// with --tombstone_retention=0:
//
//   availability_bench --bench=churn --churn_entries=1000000
//
// --bench=leaf: a phone (--profile=leaf, subscribed to one thumbnail
// variant, default budget) paired with a full device A of N sidecars:
// the leaf's resident memory beside an empty full device's; WhoHas of 100
// keys on the leaf, delegated to A (new keys every call, then the same
// keys again from the leaf's cache), beside the same WhoHas answered by A
// from its own memory; the bytes of the leaf's unchanged
// gossip rounds; and the leaf's wake-ups (context switches) while idle,
// beside an idle full device's:
//
//   availability_bench --bench=leaf --leaf_entries=6000000
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <numeric>
#include <optional>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "absl/time/clock.h"
#include "common/device_key.h"
#include "common/pg/connection.h"
#include "common/request_limits.h"
#include "common/sha256.h"
#include "common/transport.h"
#include "services/availability/inventory_store.h"
#include "services/availability/self_snapshot.h"
#include "tests/support/availability_process.h"
#include "tests/support/pg_server.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_data.h"

ABSL_FLAG(std::vector<std::string>, scales, {"1000000"},
          "numbers of sidecars on device A, one run each");
ABSL_FLAG(int, whohas_calls, 50, "WhoHas calls per measurement");
ABSL_FLAG(bool, metrics, false,
          "--bench=scale: both devices record and serve Prometheus metrics "
          "(--metrics_listen=127.0.0.1:0), to measure what they cost");
ABSL_FLAG(absl::Duration, round_window, absl::Seconds(10),
          "how long to count bytes of unchanged gossip rounds");
ABSL_FLAG(std::string, binary, AVAILABILITY_BIN, "sidecar-availability");
ABSL_FLAG(std::vector<std::string>, bench, {"scale"},
          "what to run: scale (the figures above, per --scales), busy "
          "(local API latency while a snapshot is received and sent)");
ABSL_FLAG(uint64_t, busy_entries, 1000000,
          "--bench=busy: sidecars on device A, sent as one snapshot");
ABSL_FLAG(absl::Duration, busy_interval, absl::Milliseconds(5),
          "--bench=busy: time between the starts of two samples");
ABSL_FLAG(int, busy_rounds, 3,
          "--bench=busy: rounds, each with new devices; phases pooled");
ABSL_FLAG(absl::Duration, idle_window, absl::Seconds(2),
          "--bench=busy: how long each idle phase is sampled");
ABSL_FLAG(std::vector<std::string>, start_entries, {"1000000"},
          "--bench=start: sidecars on the device, one run each");
ABSL_FLAG(int, start_runs, 3, "--bench=start: starts per size (median)");
ABSL_FLAG(std::string, before_binary, "",
          "--bench=start: also time this sidecar-availability (e.g. one "
          "built from main), on the same rows with the schema before "
          "migration 5");
ABSL_FLAG(uint64_t, churn_entries, 1000000, "--bench=churn: live sidecars");
ABSL_FLAG(uint64_t, leaf_entries, 1000000,
          "--bench=leaf: sidecars on the full device A");
ABSL_FLAG(int, leaf_calls, 200, "--bench=leaf: WhoHas calls per series");
ABSL_FLAG(int, churn_rounds, 10,
          "--bench=churn: times every sidecar is registered anew");

namespace sidecar::bench {
namespace {

using availability::ChangeRecord;
using availability::InventoryStore;
using availability::LocalRecord;
using testing::AvailabilityProcess;
using testing::PgServer;
using testing::TcpProxy;

SidecarKey KeyFor(uint64_t i) { return testing::BenchKey(i); }

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s << "\n";
    std::exit(1);
  }
}

// Fills a device's database with n READY sidecars through the store API.
void Seed(const std::string& conninfo, uint64_t n) {
  auto store = InventoryStore::Open(conninfo, absl::Seconds(30));
  Check(store.status(), "open store");
  const uint64_t kBatch = 20000;
  absl::Time start = absl::Now();
  for (uint64_t base = 0; base < n; base += kBatch) {
    std::vector<LocalRecord> recs;
    std::vector<ChangeRecord> changes;
    for (uint64_t i = base; i < std::min(n, base + kBatch); ++i) {
      LocalRecord r;
      r.key = KeyFor(i);
      r.size = 40000 + i % 10000;
      r.sha256 = Sha256Of(absl::StrCat("bytes-", i));
      r.status = v1::SIDECAR_STATUS_READY;
      r.generator_version = "bench";
      ChangeRecord c;
      c.seq = i + 1;
      c.key = r.key;
      c.size = r.size;
      c.sha256 = *r.sha256;
      recs.push_back(std::move(r));
      changes.push_back(std::move(c));
    }
    Check((*store)->Apply(recs, {}, changes).status(), "seed apply");
  }
  std::cerr << "seeded " << n << " sidecars in " << absl::Now() - start << "\n";
}

int64_t RssBytes(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      int64_t kb = 0;
      std::sscanf(line.c_str(), "VmRSS: %ld kB", &kb);
      return kb * 1024;
    }
  }
  return -1;
}

uint64_t KnownFrom(AvailabilityProcess* d, const std::string& device_id) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::ListPeersResponse resp;
  if (!d->api()->ListPeers(&ctx, {}, &resp).ok()) return 0;
  for (const auto& p : resp.peers()) {
    if (p.device_id() == device_id) return p.sidecars();
  }
  return 0;
}

std::string DeviceId(AvailabilityProcess* d) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::DeviceInfo info;
  Check(FromGrpcStatus(d->api()->GetDevice(&ctx, {}, &info)), "GetDevice");
  return info.device_id();
}

// TLS for the copy baseline: a throwaway device certificate, and TLS 1.3
// with OpenSSL's default suites, the library gRPC uses here.
struct CopyTls {
  SSL_CTX* server = nullptr;
  SSL_CTX* client = nullptr;
};

CopyTls MakeCopyTls(const std::string& dir) {
  const std::string state = dir + "/tls-copy";
  if (DeviceKey::Absent(state)) {
    Check(DeviceKey::Create(state, "tls-copy").status(), "copy certificate");
  }
  CopyTls t;
  t.server = SSL_CTX_new(TLS_server_method());
  t.client = SSL_CTX_new(TLS_client_method());
  for (SSL_CTX* ctx : {t.server, t.client}) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  }
  // A TLS 1.3 server sends session tickets at its first read; the writer
  // may have sent everything and closed by then. One-shot copies resume
  // nothing, so send none.
  SSL_CTX_set_num_tickets(t.server, 0);
  if (SSL_CTX_use_certificate_chain_file(
          t.server, (state + "/" + kDeviceCertFile).c_str()) != 1 ||
      SSL_CTX_use_PrivateKey_file(t.server,
                                  (state + "/" + kDeviceKeyFile).c_str(),
                                  SSL_FILETYPE_PEM) != 1) {
    std::cerr << "TLS copy baseline: cannot load its certificate\n";
    std::exit(1);
  }
  return t;
}

// A copy of `bytes` over loopback TCP, reader and writer on two threads:
// the floor any exchange protocol could reach on this machine. Through a
// TcpProxy (as the exchange goes in RunScale) when `via_proxy`; inside TLS
// when `tls` is given.
absl::Duration RawTcpCopy(uint64_t bytes, bool via_proxy = false,
                          const CopyTls* tls = nullptr) {
  int l = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(l, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  ::listen(l, 1);
  socklen_t len = sizeof(addr);
  getsockname(l, reinterpret_cast<sockaddr*>(&addr), &len);
  std::unique_ptr<TcpProxy> proxy;
  if (via_proxy) {
    auto p = TcpProxy::Start("127.0.0.1", ntohs(addr.sin_port));
    Check(p.status(), "proxy for the raw copy");
    proxy = std::move(*p);
    addr.sin_port = htons(static_cast<uint16_t>(proxy->port()));
  }
  absl::Time start = absl::Now();
  std::thread writer([&] {
    int c = ::socket(AF_INET, SOCK_STREAM, 0);
    ::connect(c, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    SSL* ssl = nullptr;
    if (tls != nullptr) {
      ssl = SSL_new(tls->client);
      SSL_set_fd(ssl, c);
      if (SSL_connect(ssl) != 1) {
        std::cerr << "TLS copy baseline: handshake failed\n";
        std::exit(1);
      }
    }
    std::vector<char> buf(1 << 20, 'x');
    for (uint64_t sent = 0; sent < bytes;) {
      const int n =
          static_cast<int>(std::min<uint64_t>(buf.size(), bytes - sent));
      const int w = ssl ? SSL_write(ssl, buf.data(), n)
                        : static_cast<int>(::write(c, buf.data(), n));
      if (w <= 0) break;
      sent += w;
    }
    if (ssl) {
      SSL_shutdown(ssl);
      SSL_free(ssl);
    }
    ::close(c);
  });
  int s = ::accept(l, nullptr, nullptr);
  SSL* ssl = nullptr;
  if (tls != nullptr) {
    ssl = SSL_new(tls->server);
    SSL_set_fd(ssl, s);
    if (SSL_accept(ssl) != 1) {
      std::cerr << "TLS copy baseline: handshake failed\n";
      std::exit(1);
    }
  }
  std::vector<char> buf(1 << 20);
  while (true) {
    const int r = ssl ? SSL_read(ssl, buf.data(), static_cast<int>(buf.size()))
                      : static_cast<int>(::read(s, buf.data(), buf.size()));
    if (r <= 0) break;
  }
  writer.join();
  absl::Duration d = absl::Now() - start;
  if (ssl) SSL_free(ssl);
  ::close(s);
  ::close(l);
  return d;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}
double P90(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() * 9 / 10];
}

int CountLines(const std::string& path, const std::string& needle) {
  std::ifstream in(path);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) n += line.find(needle) != std::string::npos;
  return n;
}

// The time of a service log line (common/log.cc: "I1207 08:17:20.123456
// tag] ...", UTC), if it has one.
std::optional<absl::Time> LogLineTime(const std::string& line) {
  const absl::TimeZone utc = absl::UTCTimeZone();
  char level;
  int mo, d, h, mi, sec, us;
  if (std::sscanf(line.c_str(), "%c%2d%2d %d:%d:%d.%d", &level, &mo, &d, &h,
                  &mi, &sec, &us) != 7) {
    return std::nullopt;
  }
  const int64_t year = absl::ToCivilYear(absl::Now(), utc).year();
  return absl::FromCivil(absl::CivilSecond(year, mo, d, h, mi, sec), utc) +
         absl::Microseconds(us);
}

// The start of the exchange `sender` answered to `receiver` from `after` on:
// the sender logs each Exchange it answers ("exchange from <address>: ...
// sending K origins"); the first with K > 0 is the snapshot.
absl::Time ExchangeStart(AvailabilityProcess* sender,
                         AvailabilityProcess* receiver, absl::Time after) {
  const std::string needle =
      absl::StrCat("exchange from ", receiver->address());
  std::ifstream in(sender->log_path());
  std::string line;
  while (std::getline(in, line)) {
    if (line.find(needle) == std::string::npos ||
        line.find("sending 0 origins") != std::string::npos) {
      continue;
    }
    std::optional<absl::Time> t = LogLineTime(line);
    if (t && *t >= after) return *t;
  }
  std::cerr << "no exchange from " << receiver->address() << " in "
            << sender->log_path() << "; counting from the pairing\n";
  return after;
}

// `flags`, with metrics on under --metrics.
std::map<std::string, std::string> WithMetrics(
    std::map<std::string, std::string> flags) {
  if (absl::GetFlag(FLAGS_metrics)) flags["metrics_listen"] = "127.0.0.1:0";
  return flags;
}

void RunScale(PgServer* pg, const std::string& dir, uint64_t n) {
  std::string tag = absl::StrCat(n);
  std::cout << "\n== " << n << " sidecars on device A ==\n";
  auto a = AvailabilityProcess::Create(
      absl::GetFlag(FLAGS_binary), pg, dir,
      {"a" + tag, {}, WithMetrics({{"verbose", "true"}})});
  Check(a.status(), "create A");
  Seed((*a)->conninfo(), n);
  // A is reached through a counting proxy: it advertises the proxy's
  // address, which peers then keep using (pairing included).
  auto proxy = TcpProxy::Start("127.0.0.1", 0);
  Check(proxy.status(), "proxy");
  absl::Time t = absl::Now();
  Check((*a)->StartWithExtraFlags({{"advertise_address", (*proxy)->address()}}),
        "start A");
  (*proxy)->Retarget((*a)->port());
  std::cout << absl::StrFormat(
      "A start-up (load %d entries from PostgreSQL): %s\n", n,
      absl::FormatDuration(absl::Now() - t));
  std::string a_id = DeviceId(a->get());

  // 1. Initial exchange through the counting proxy.
  auto b = AvailabilityProcess::Create(
      absl::GetFlag(FLAGS_binary), pg, dir,
      {"b" + tag,
       {},
       WithMetrics({{"gossip_interval", "1h"},
                    {"ping_interval", "1h"},
                    {"contact_learned_peers", "false"},
                    {"verbose", "true"}})});
  Check(b.status(), "create B");
  (*proxy)->ResetCounters();
  absl::Time launch = absl::Now();
  Check((*b)->Start(), "start B");
  // B pairs with A through the proxy (mutual TLS from here on), which
  // starts the exchange.
  Check(Pair(a->get(), b->get(), (*proxy)->address()), "pair B with A");
  absl::Time done;
  while (true) {
    if (KnownFrom(b->get(), a_id) == n) {
      done = absl::Now();
      break;
    }
    if (absl::Now() - launch > absl::Minutes(5)) {
      std::cerr << "B did not learn all entries\n";
      std::exit(1);
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  absl::Time first_byte = absl::FromUnixNanos((*proxy)->first_up_unix_nanos());
  uint64_t wire = (*proxy)->bytes_up() + (*proxy)->bytes_down();
  absl::Duration e2e = done - launch;
  absl::Duration exchange = done - first_byte;
  // The snapshot alone: from A's answer to B's Exchange (its log) on,
  // without the pairing that comes first.
  absl::Duration answer = done - ExchangeStart(a->get(), b->get(), launch);
  absl::Duration raw = RawTcpCopy(wire);
  absl::Duration raw_proxied = RawTcpCopy(wire, /*via_proxy=*/true);
  const CopyTls tls = MakeCopyTls(dir);
  absl::Duration tls_proxied = RawTcpCopy(wire, /*via_proxy=*/true, &tls);
  SSL_CTX_free(tls.server);
  SSL_CTX_free(tls.client);
  std::cout << absl::StrFormat(
      "initial exchange: %s end to end (B launch -> B knows all), %s from "
      "B's first byte (pairing included), %s from A's answer; %.1f MB on the "
      "wire (%.1f bytes/entry)\n",
      absl::FormatDuration(e2e), absl::FormatDuration(exchange),
      absl::FormatDuration(answer), wire / 1e6, static_cast<double>(wire) / n);
  std::cout << absl::StrFormat(
      "  baseline raw TCP copy of the same bytes: %s; exchange/raw = %.2f "
      "from the first byte, %.2f from A's answer\n",
      absl::FormatDuration(raw),
      absl::ToDoubleSeconds(exchange) / absl::ToDoubleSeconds(raw),
      absl::ToDoubleSeconds(answer) / absl::ToDoubleSeconds(raw));
  std::cout << absl::StrFormat(
      "  baseline raw TCP copy through the same counting proxy: %s; "
      "exchange/raw via proxy = %.2f from A's answer\n",
      absl::FormatDuration(raw_proxied),
      absl::ToDoubleSeconds(answer) / absl::ToDoubleSeconds(raw_proxied));
  std::cout << absl::StrFormat(
      "  baseline TLS 1.3 copy through the same proxy (the floor with the "
      "peers' encryption): %s; exchange/TLS copy = %.2f from A's answer\n",
      absl::FormatDuration(tls_proxied),
      absl::ToDoubleSeconds(answer) / absl::ToDoubleSeconds(tls_proxied));

  // 4. Memory: B with n entries against an identical empty device.
  auto empty = AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                           {"e" + tag, {}, {}});
  Check(empty.status(), "create empty");
  Check((*empty)->Start(), "start empty");
  absl::SleepFor(absl::Milliseconds(500));
  int64_t rss_b = RssBytes((*b)->pid());
  int64_t rss_e = RssBytes((*empty)->pid());
  std::cout << absl::StrFormat(
      "memory: B %.1f MiB with %d entries, empty device %.1f MiB: %.1f "
      "bytes per cached entry\n",
      rss_b / 1048576.0, n, rss_e / 1048576.0,
      static_cast<double>(rss_b - rss_e) / n);

  // 3. WhoHas for 10,000 keys on B: half held by A, half unknown.
  v1::WhoHasRequest req;
  absl::flat_hash_map<SidecarKey, int> baseline_map;
  for (uint64_t i = 0; i < n; ++i) baseline_map.emplace(KeyFor(i), 1);
  std::vector<SidecarKey> probe;
  for (int i = 0; i < 10000; ++i) {
    SidecarKey k = i % 2 ? KeyFor((i * 7919ull) % n) : KeyFor(n + i);
    KeyToProto(k, req.add_keys());
    probe.push_back(k);
  }
  std::vector<double> server_ms, client_ms, floor_ms;
  size_t found = 0;
  for (int c = 0; c < absl::GetFlag(FLAGS_whohas_calls); ++c) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    v1::WhoHasResponse resp;
    absl::Time s = absl::Now();
    Check(FromGrpcStatus((*b)->api()->WhoHas(&ctx, req, &resp)), "WhoHas");
    client_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - s));
    auto md = ctx.GetServerTrailingMetadata();
    auto it = md.find("server-micros");
    int64_t us = 0;
    if (it != md.end()) {
      (void)absl::SimpleAtoi(std::string(it->second.data(), it->second.size()),
                             &us);
    }
    server_ms.push_back(us / 1000.0);
    found = 0;
    for (const auto& r : resp.results()) found += r.holders_size() > 0;
    grpc::ClientContext ctx2;
    SetDeadline(&ctx2, absl::Seconds(10));
    v1::DeviceInfo info;
    s = absl::Now();
    Check(FromGrpcStatus((*b)->api()->GetDevice(&ctx2, {}, &info)), "Get");
    floor_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - s));
  }
  absl::Time s = absl::Now();
  size_t map_found = 0;
  for (const SidecarKey& k : probe) map_found += baseline_map.contains(k);
  double map_ms = absl::ToDoubleMilliseconds(absl::Now() - s);
  std::cout << absl::StrFormat(
      "WhoHas 10,000 keys (%d held): server median %.2f ms (p90 %.2f), "
      "client median %.2f ms (p90 %.2f); empty RPC median %.2f ms; "
      "in-process flat_hash_map lookup of the same keys %.2f ms (%d held); "
      "server/hash-map = %.1f\n",
      found, Median(server_ms), P90(server_ms), Median(client_ms),
      P90(client_ms), Median(floor_ms), map_ms, map_found,
      Median(server_ms) / std::max(map_ms, 1e-3));
  baseline_map.clear();

  // 2. Bytes of unchanged gossip rounds: a device pulling every second.
  auto& proxy2 = proxy;  // B is quiet now (its timers are an hour)
  auto r = AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                       {"r" + tag,
                                        {},
                                        {{"gossip_interval", "1s"},
                                         {"gossip_jitter", "0"},
                                         {"ping_interval", "1h"},
                                         {"contact_learned_peers", "false"},
                                         {"verbose", "true"}}});
  Check(r.status(), "create R");
  Check((*r)->Start(), "start R");
  Check(Pair(a->get(), r->get(), (*proxy2)->address()), "pair R with A");
  while (KnownFrom(r->get(), a_id) != n) absl::SleepFor(absl::Milliseconds(5));
  absl::SleepFor(absl::Milliseconds(1500));  // let prompt rounds finish
  (*proxy2)->ResetCounters();
  int rounds0 = CountLines((*r)->log_path(), "exchange with");
  absl::SleepFor(absl::GetFlag(FLAGS_round_window));
  int rounds = CountLines((*r)->log_path(), "exchange with") - rounds0;
  uint64_t bytes = (*proxy2)->bytes_up() + (*proxy2)->bytes_down();
  std::cout << absl::StrFormat(
      "unchanged gossip rounds: %d rounds, %d bytes of TCP payload both ways "
      "(%d up, %d down): %.0f bytes per round per peer\n",
      rounds, bytes, (*proxy2)->bytes_up(), (*proxy2)->bytes_down(),
      rounds ? static_cast<double>(bytes) / rounds : 0.0);
}

// --bench=busy ------------------------------------------------------------

// One sample of B's local API: a WhoHas of 100 keys, then a Resolve.
struct ApiSample {
  absl::Time start;
  double whohas_ms = 0;
  double resolve_ms = 0;
  bool ok = true;
};

// Calls WhoHas and Resolve on a device's local API every `interval` (or
// back to back when a call takes longer) on its own thread, until Stop().
class ApiSampler {
 public:
  ApiSampler(v1::Availability::Stub* api, v1::WhoHasRequest whohas,
             v1::ResolveRequest resolve, absl::Duration interval)
      : api_(api),
        whohas_(std::move(whohas)),
        resolve_(std::move(resolve)),
        interval_(interval),
        thread_([this] { Run(); }) {}

  std::vector<ApiSample> Stop() {
    stop_ = true;
    thread_.join();
    return std::move(samples_);
  }

 private:
  void Run() {
    while (!stop_) {
      ApiSample s;
      s.start = absl::Now();
      {
        grpc::ClientContext ctx;
        SetDeadline(&ctx, absl::Seconds(30));
        v1::WhoHasResponse resp;
        s.ok &= api_->WhoHas(&ctx, whohas_, &resp).ok();
      }
      absl::Time mid = absl::Now();
      s.whohas_ms = absl::ToDoubleMilliseconds(mid - s.start);
      {
        grpc::ClientContext ctx;
        SetDeadline(&ctx, absl::Seconds(30));
        v1::ResolveResponse resp;
        s.ok &= api_->Resolve(&ctx, resolve_, &resp).ok();
      }
      s.resolve_ms = absl::ToDoubleMilliseconds(absl::Now() - mid);
      samples_.push_back(s);
      absl::SleepFor(s.start + interval_ - absl::Now());
    }
  }

  v1::Availability::Stub* const api_;
  const v1::WhoHasRequest whohas_;
  const v1::ResolveRequest resolve_;
  const absl::Duration interval_;
  std::atomic<bool> stop_{false};
  std::vector<ApiSample> samples_;  // the sampler thread's until Stop()
  std::thread thread_;
};

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = static_cast<size_t>(q * (v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

// The samples of one phase, pooled over rounds, and how long it lasted.
struct Phase {
  std::string name;
  std::vector<ApiSample> samples;
  absl::Duration length;
  // The slowest WhoHas and when it started, from its phase's start.
  double worst_ms = 0;
  absl::Duration worst_at;

  // Takes the samples of `all` that started within [from, to].
  void Add(const std::vector<ApiSample>& all, absl::Time from, absl::Time to) {
    length += to - from;
    for (const ApiSample& s : all) {
      if (s.start < from || s.start > to) continue;
      samples.push_back(s);
      if (s.whohas_ms > worst_ms) {
        worst_ms = s.whohas_ms;
        worst_at = s.start - from;
      }
    }
  }
  size_t failed() const {
    size_t n = 0;
    for (const ApiSample& s : samples) n += !s.ok;
    return n;
  }
  double WhoHas(double q) const {
    std::vector<double> v;
    for (const ApiSample& s : samples) v.push_back(s.whohas_ms);
    return Quantile(std::move(v), q);
  }
  double Resolve(double q) const {
    std::vector<double> v;
    for (const ApiSample& s : samples) v.push_back(s.resolve_ms);
    return Quantile(std::move(v), q);
  }
};

void PrintPhase(const Phase& f, const Phase* idle) {
  std::cout << absl::StrFormat(
      "  %-10s %5d samples in %8s: WhoHas(100) median %6.2f ms p99 %7.2f ms; "
      "Resolve median %6.2f ms p99 %7.2f ms; slowest WhoHas %.1f ms at +%s",
      f.name, f.samples.size(),
      absl::FormatDuration(absl::Trunc(f.length, absl::Milliseconds(1))),
      f.WhoHas(0.5), f.WhoHas(0.99), f.Resolve(0.5), f.Resolve(0.99),
      f.worst_ms,
      absl::FormatDuration(absl::Trunc(f.worst_at, absl::Milliseconds(1))));
  if (size_t failed = f.failed()) std::cout << " (" << failed << " failed)";
  auto ratio = [](double a, double b) { return b > 0 ? a / b : 0.0; };
  if (idle != nullptr) {
    std::cout << absl::StrFormat(
        "\n  %-10s vs %s: WhoHas median x%.2f p99 x%.2f; Resolve median "
        "x%.2f p99 x%.2f",
        "", idle->name, ratio(f.WhoHas(0.5), idle->WhoHas(0.5)),
        ratio(f.WhoHas(0.99), idle->WhoHas(0.99)),
        ratio(f.Resolve(0.5), idle->Resolve(0.5)),
        ratio(f.Resolve(0.99), idle->Resolve(0.99)));
  }
  std::cout << "\n";
}

// Waits until `d` knows the entries of `origin` (A's snapshot: the last of
// its n keys is held by origin); when that happened. ListPeers would count
// them, but lists only the devices `d` contacts itself.
absl::Time AwaitKnown(AvailabilityProcess* d, const std::string& origin,
                      uint64_t n) {
  v1::WhoHasRequest req;
  KeyToProto(KeyFor(n - 1), req.add_keys());
  absl::Time start = absl::Now();
  while (true) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::WhoHasResponse resp;
    if (d->api()->WhoHas(&ctx, req, &resp).ok() && resp.results_size() == 1) {
      for (const v1::Holder& h : resp.results(0).holders()) {
        if (resp.devices(h.device()).device_id() == origin) return absl::Now();
      }
    }
    if (absl::Now() - start > absl::Minutes(2)) {
      std::cerr << d->name() << " did not learn the entries of " << origin
                << "\n";
      std::exit(1);
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
}

// WhoHas/Resolve latency on B: idle, receiving a snapshot of n entries from
// A, idle again, sending it on to a fresh C; --busy_rounds times, each with
// new devices, the samples of each phase pooled.
int RunBusy(PgServer* pg, const std::string& dir, uint64_t n) {
  std::cout << "\n== local API latency of B while a snapshot of " << n
            << " entries is received and sent ==\n";
  const std::map<std::string, std::string> quiet = {
      {"gossip_interval", "1h"},
      {"ping_interval", "1h"},
      {"contact_learned_peers", "false"},
      {"verbose", "true"}};
  // 100 keys, half held by A; one key A holds for Resolve (fetch-only: the
  // answer ranks A as a source once B knows it).
  v1::WhoHasRequest whohas;
  for (int i = 0; i < 100; ++i) {
    SidecarKey k = i % 2 ? KeyFor((i * 7919ull) % n) : KeyFor(n + i);
    KeyToProto(k, whohas.add_keys());
  }
  v1::ResolveRequest resolve;
  KeyToProto(KeyFor(12345 % n), resolve.mutable_key());
  resolve.set_mode(v1::RESOLVE_MODE_FETCH_ONLY);

  Phase idle_empty{"idle"}, receiving{"receiving"}, idle_full{"idle(full)"},
      sending{"sending"};
  const absl::Duration idle = absl::GetFlag(FLAGS_idle_window);
  for (int round = 0; round < absl::GetFlag(FLAGS_busy_rounds); ++round) {
    // A new library each round: a device that joins through a later member
    // does not take the founder's record (Library::Merge), so C would not
    // learn an earlier round's A.
    auto a =
        AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                    {absl::StrCat("busy-a", round), {}, quiet});
    Check(a.status(), "create A");
    Seed((*a)->conninfo(), n);
    Check((*a)->Start(), "start A");
    const std::string a_id = DeviceId(a->get());
    auto b =
        AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                    {absl::StrCat("busy-b", round), {}, quiet});
    Check(b.status(), "create B");
    Check((*b)->Start(), "start B");
    auto c =
        AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                    {absl::StrCat("busy-c", round), {}, quiet});
    Check(c.status(), "create C");
    Check((*c)->Start(), "start C");

    ApiSampler sampler((*b)->api(), whohas, resolve,
                       absl::GetFlag(FLAGS_busy_interval));
    absl::Time idle0 = absl::Now();
    absl::SleepFor(idle);
    absl::Time pair_ab = absl::Now();
    Check(testing::Pair(a->get(), b->get()), "pair B with A");
    absl::Time received = AwaitKnown(b->get(), a_id, n);
    absl::Time receive_start = ExchangeStart(a->get(), b->get(), pair_ab);
    absl::SleepFor(absl::Seconds(1));  // prompt rounds after learning
    absl::Time idle1 = absl::Now();
    absl::SleepFor(idle);
    absl::Time pair_bc = absl::Now();
    Check(testing::Pair(b->get(), c->get()), "pair C with B");
    absl::Time sent = AwaitKnown(c->get(), a_id, n);
    absl::Time send_start = ExchangeStart(b->get(), c->get(), pair_bc);
    std::vector<ApiSample> samples = sampler.Stop();
    std::cout << absl::StrFormat(
        "round %d: exchange A->B %s (pairing took %s), B->C %s (pairing "
        "took %s)\n",
        round, absl::FormatDuration(received - receive_start),
        absl::FormatDuration(receive_start - pair_ab),
        absl::FormatDuration(sent - send_start),
        absl::FormatDuration(send_start - pair_bc));
    idle_empty.Add(samples, idle0, idle0 + idle);
    receiving.Add(samples, receive_start, received);
    idle_full.Add(samples, idle1, idle1 + idle);
    sending.Add(samples, send_start, sent);
  }
  std::cout << "B's WhoHas of 100 keys and Resolve of one, one sample every "
            << absl::FormatDuration(absl::GetFlag(FLAGS_busy_interval))
            << " (samples that started within each phase; idle: B alone, "
               "idle(full): B holding A's entries):\n";
  PrintPhase(idle_empty, nullptr);
  PrintPhase(receiving, &idle_empty);
  PrintPhase(idle_full, nullptr);
  PrintPhase(sending, &idle_full);
  bool ok = true;
  for (const Phase* f : {&idle_empty, &receiving, &idle_full, &sending}) {
    if (f->samples.empty() || f->failed() > 0) {
      std::cerr << f->name << ": " << f->samples.size() << " samples, "
                << f->failed() << " failed\n";
      ok = false;
    }
  }
  return ok ? 0 : 1;
}

// --bench=start -----------------------------------------------------------

std::unique_ptr<pg::Connection> Connect(const std::string& conninfo) {
  auto conn = pg::Connection::Open(conninfo);
  Check(conn.status(), "connect");
  return std::move(*conn);
}

// Whether `d` lists itself as a holder of `key` (its own state is served).
bool HoldsSelf(AvailabilityProcess* d, const SidecarKey& key,
               const std::string& self_id) {
  v1::WhoHasRequest req;
  KeyToProto(key, req.add_keys());
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::WhoHasResponse resp;
  if (!d->api()->WhoHas(&ctx, req, &resp).ok()) return false;
  for (const v1::Holder& h : resp.results(0).holders()) {
    if (resp.devices(h.device()).device_id() == self_id) return true;
  }
  return false;
}

struct StartTimes {
  double api_s = 0;   // launch -> local API answers
  double full_s = 0;  // launch -> own state served
};

// Starts `d` (already seeded), with `flags` for this run, and stops it
// again.
StartTimes TimeStart(AvailabilityProcess* d, uint64_t n,
                     const std::map<std::string, std::string>& flags = {}) {
  StartTimes t;
  const absl::Time launch = absl::Now();
  Check(d->StartWithExtraFlags(flags), "start device");
  std::string id = DeviceId(d);
  t.api_s = absl::ToDoubleSeconds(absl::Now() - launch);
  while (!HoldsSelf(d, KeyFor(n - 1), id)) {
    if (absl::Now() - launch > absl::Minutes(5)) {
      std::cerr << "device does not serve its own state\n";
      std::exit(1);
    }
    absl::SleepFor(absl::Milliseconds(2));
  }
  t.full_s = absl::ToDoubleSeconds(absl::Now() - launch);
  d->Stop();
  return t;
}

// The schema as a binary from before migration 5 expects it.
void DowngradeSchema(const std::string& conninfo) {
  auto conn = Connect(conninfo);
  Check(conn->Exec("DELETE FROM schema_migrations WHERE version = 5; "
                   "ALTER TABLE device_identity DROP COLUMN floor_seq")
            .status(),
        "schema before migration 5");
}

// A device of `binary` holding n sidecars: started once empty (it makes its
// key and identity; a database seeded first would be rewritten in key order
// by that start), then seeded in seq order with random keys, as a device's
// log grows.
std::unique_ptr<AvailabilityProcess> SeededDevice(PgServer* pg,
                                                  const std::string& dir,
                                                  const std::string& binary,
                                                  const std::string& name,
                                                  uint64_t n) {
  auto d = AvailabilityProcess::Create(binary, pg, dir, {name, {}, {}});
  Check(d.status(), "create device");
  Check((*d)->Start(), "first start");
  (*d)->Stop();
  Seed((*d)->conninfo(), n);
  return std::move(*d);
}

// Median seconds from launch until `d` serves its own state, over runs.
double MedianStart(AvailabilityProcess* d, uint64_t n) {
  std::vector<double> full_s;
  for (int run = 0; run < absl::GetFlag(FLAGS_start_runs); ++run) {
    full_s.push_back(TimeStart(d, n).full_s);
  }
  return Median(full_s);
}

// The last "own-origin snapshot written ... in X" of `d`'s log (at
// shutdown, or in the background after a start that read many rows), in
// seconds; -1 if none.
double SnapshotWriteSeconds(AvailabilityProcess* d) {
  std::ifstream log(d->log_path());
  const std::string marker = "own-origin snapshot written ";
  std::string line;
  double out = -1;
  while (std::getline(log, line)) {
    size_t at = line.find(marker);
    if (at == std::string::npos) continue;
    size_t in = line.find(" in ", at);
    absl::Duration took;
    if (in != std::string::npos &&
        absl::ParseDuration(line.substr(in + 4), &took)) {
      out = absl::ToDoubleSeconds(took);
    }
  }
  return out;
}

int RunStart(PgServer* pg, const std::string& dir, uint64_t n) {
  std::cout << "\n== start of a device holding " << n << " sidecars ==\n";
  auto d = SeededDevice(pg, dir, absl::GetFlag(FLAGS_binary),
                        absl::StrCat("start", n), n);
  // The first start reads the seeded rows and writes the own-origin
  // snapshot (at shutdown); the timed ones start from it.
  StartTimes first = TimeStart(d.get(), n);
  const std::string snapshot =
      absl::StrCat(d->state_dir(), "/", availability::kSelfSnapshotFile);
  std::error_code ec;
  const uint64_t snapshot_bytes = std::filesystem::file_size(snapshot, ec);
  // Later runs change nothing, so they do not write it again.
  const double write_s = SnapshotWriteSeconds(d.get());
  std::cout << absl::StrFormat(
      "first start (whole change log) %.3f s; snapshot %d bytes (%.1f per "
      "sidecar), written in %.3f s\n",
      first.full_s, snapshot_bytes, double(snapshot_bytes) / double(n),
      write_s);
  const std::map<std::string, std::string> no_snapshot = {
      {"start_snapshot", "false"}};
  std::vector<double> count_s, copy_s, api_s, full_s, load_api_s, load_s;
  for (int run = 0; run < absl::GetFlag(FLAGS_start_runs); ++run) {
    auto conn = Connect(d->conninfo());
    absl::Time t = absl::Now();
    Check(conn->Exec("SELECT count(*) FROM change_log").status(), "count");
    count_s.push_back(absl::ToDoubleSeconds(absl::Now() - t));
    uint64_t rows = 0;
    t = absl::Now();
    Check(conn->CopyOutBinary("SELECT * FROM change_log",
                              [&](auto) {
                                ++rows;
                                return absl::OkStatus();
                              }),
          "copy");
    copy_s.push_back(absl::ToDoubleSeconds(absl::Now() - t));
    conn.reset();
    StartTimes ours = TimeStart(d.get(), n);
    api_s.push_back(ours.api_s);
    full_s.push_back(ours.full_s);
    // The same device without its snapshot: every change-log row.
    StartTimes load = TimeStart(d.get(), n, no_snapshot);
    load_api_s.push_back(load.api_s);
    load_s.push_back(load.full_s);
    std::cout << absl::StrFormat(
        "run %d: count(*) %.3f s, binary COPY of %d rows %.3f s; ours from "
        "the snapshot: local API answers after %.3f s, own state served "
        "after %.3f s; ours with --start_snapshot=false: %.3f s, %.3f s\n",
        run, count_s.back(), rows, copy_s.back(), ours.api_s, ours.full_s,
        load.api_s, load.full_s);
  }
  std::cout << absl::StrFormat(
      "median: count(*) %.3f s, COPY %.3f s; own state served: from the "
      "snapshot %.3f s (API %.3f s), whole change log %.3f s (API %.3f s); "
      "whole log/snapshot = %.2f; snapshot/COPY = %.2f; snapshot %d bytes, "
      "written in %.3f s\n",
      Median(count_s), Median(copy_s), Median(full_s), Median(api_s),
      Median(load_s), Median(load_api_s), Median(load_s) / Median(full_s),
      Median(full_s) / Median(copy_s), snapshot_bytes, write_s);
  const std::string before_bin = absl::GetFlag(FLAGS_before_binary);
  if (!before_bin.empty()) {
    // The same rows for a binary from before migration 5.
    auto before =
        SeededDevice(pg, dir, before_bin, absl::StrCat("before", n), n);
    DowngradeSchema(before->conninfo());
    double before_s = MedianStart(before.get(), n);
    std::cout << absl::StrFormat(
        "before (%s): own state served after %.3f s (median); before/ours = "
        "%.2f, before/COPY = %.2f\n",
        before_bin, before_s, before_s / Median(full_s),
        before_s / Median(copy_s));
  }
  return 0;
}

// --bench=leaf ------------------------------------------------------------

// Voluntary and involuntary context switches of a process's live threads:
// how often it woke up. Each thread's are in /proc/PID/task/TID/status, the
// main thread's included.
int64_t ContextSwitches(int pid) {
  int64_t total = 0;
  std::error_code ec;
  for (const auto& t : std::filesystem::directory_iterator(
           absl::StrCat("/proc/", pid, "/task"), ec)) {
    std::ifstream in(t.path() / "status");
    std::string line;
    while (std::getline(in, line)) {
      int64_t v = 0;
      if (std::sscanf(line.c_str(), "voluntary_ctxt_switches: %ld", &v) == 1 ||
          std::sscanf(line.c_str(), "nonvoluntary_ctxt_switches: %ld", &v) ==
              1) {
        total += v;
      }
    }
  }
  return total;
}

// Milliseconds of `calls` WhoHas calls of 100 keys each on `d`; key i of
// call c is key(c, i). *held: keys with any holder.
std::vector<double> TimeWhoHas(AvailabilityProcess* d, int calls,
                               const std::function<SidecarKey(int, int)>& key,
                               size_t* held) {
  std::vector<double> ms;
  *held = 0;
  for (int c = 0; c < calls; ++c) {
    v1::WhoHasRequest req;
    for (int i = 0; i < 100; ++i) KeyToProto(key(c, i), req.add_keys());
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    v1::WhoHasResponse resp;
    absl::Time s = absl::Now();
    Check(FromGrpcStatus(d->api()->WhoHas(&ctx, req, &resp)), "WhoHas");
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - s));
    for (const auto& r : resp.results()) *held += r.holders_size() > 0;
  }
  return ms;
}

double P99(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[std::min(v.size() - 1, v.size() * 99 / 100)];
}

int RunLeaf(PgServer* pg, const std::string& dir, uint64_t n) {
  std::cout << "\n== a leaf beside a full device A of " << n
            << " sidecars ==\n";
  auto a = SeededDevice(pg, dir, absl::GetFlag(FLAGS_binary),
                        absl::StrCat("leafa", n), n);
  auto proxy = TcpProxy::Start("127.0.0.1", 0);
  Check(proxy.status(), "proxy");
  Check(a->StartWithExtraFlags(
            {{"advertise_address", (*proxy)->address()}, {"verbose", "true"}}),
        "start A");
  (*proxy)->Retarget(a->port());
  const std::string a_id = DeviceId(a.get());
  auto empty = AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                           {absl::StrCat("leafe", n), {}, {}});
  Check(empty.status(), "create empty");
  Check((*empty)->Start(), "start empty");
  // The leaf as a phone runs it, one variant subscribed: A has n/6 of them.
  auto leaf = AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                          {absl::StrCat("leaf", n),
                                           {},
                                           {{"profile", "leaf"},
                                            {"subscribe_kinds", "thumb"},
                                            {"subscribe_variants", "grid@2x"},
                                            {"verbose", "true"}}});
  Check(leaf.status(), "create leaf");
  Check((*leaf)->Start(), "start leaf");
  Check(Pair(a.get(), leaf->get(), (*proxy)->address()), "pair leaf with A");
  const absl::Time paired = absl::Now();
  // Until A's answer is in: mirrored, or found too big.
  while (true) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::ListPeersResponse resp;
    bool settled = false;
    if ((*leaf)->api()->ListPeers(&ctx, {}, &resp).ok()) {
      for (const auto& p : resp.peers()) {
        settled |= p.device_id() == a_id &&
                   (p.not_mirrored() || p.sidecars() == (n + 5) / 6);
      }
    }
    if (settled) break;
    if (absl::Now() - paired > absl::Minutes(5)) {
      std::cerr << "the leaf did not settle with A\n";
      return 1;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  absl::SleepFor(absl::Milliseconds(500));
  grpc::ClientContext ictx;
  SetDeadline(&ictx, absl::Seconds(5));
  v1::DeviceInfo info;
  Check(FromGrpcStatus((*leaf)->api()->GetDevice(&ictx, {}, &info)), "info");
  const int64_t rss_leaf = RssBytes((*leaf)->pid());
  const int64_t rss_empty = RssBytes((*empty)->pid());
  const int64_t rss_a = RssBytes(a->pid());
  std::cout << absl::StrFormat(
      "memory: leaf %.1f MiB (mirrors %d entries, budget %d), empty full "
      "device %.1f MiB, A (full, %d own entries) %.1f MiB; leaf/empty = "
      "%.2f\n",
      rss_leaf / 1048576.0, info.mirrored_entries(),
      info.mirror_budget_entries(), rss_empty / 1048576.0, n, rss_a / 1048576.0,
      static_cast<double>(rss_leaf) / rss_empty);

  // Delegated WhoHas of 100 keys: half held by A, half unknown; new keys
  // every call (no cached answer), then the same keys again (cached).
  const int calls = absl::GetFlag(FLAGS_leaf_calls);
  auto key = [&](int c, int i) {
    uint64_t j = static_cast<uint64_t>(c) * 100 + i;
    return i % 2 ? KeyFor((j * 7919ull) % n) : KeyFor(n + j);
  };
  size_t held_leaf = 0, held_cached = 0, held_a = 0;
  std::vector<double> leaf_ms = TimeWhoHas(leaf->get(), calls, key, &held_leaf);
  std::vector<double> cached_ms =
      TimeWhoHas(leaf->get(), calls, key, &held_cached);
  std::vector<double> a_ms = TimeWhoHas(a.get(), calls, key, &held_a);
  std::cout << absl::StrFormat(
      "WhoHas 100 keys on the leaf, delegated to A: median %.2f ms, p99 "
      "%.2f ms (%d of %d keys held); again from the leaf's cache: median "
      "%.2f ms\n  baseline: A answering the same from its own memory: "
      "median %.2f ms, p99 %.2f ms (%d held); delegated/A = %.2f\n",
      Median(leaf_ms), P99(leaf_ms), held_leaf, calls * 100, Median(cached_ms),
      Median(a_ms), P99(a_ms), held_a,
      Median(leaf_ms) / std::max(Median(a_ms), 1e-3));

  // The leaf's wake-ups while idle, beside an idle full device's.
  const absl::Duration window = absl::GetFlag(FLAGS_round_window);
  absl::SleepFor(absl::Seconds(1));  // the last answers settle
  int64_t leaf_cs = ContextSwitches((*leaf)->pid());
  int64_t empty_cs = ContextSwitches((*empty)->pid());
  int64_t a_cs = ContextSwitches(a->pid());
  absl::SleepFor(window);
  leaf_cs = ContextSwitches((*leaf)->pid()) - leaf_cs;
  empty_cs = ContextSwitches((*empty)->pid()) - empty_cs;
  a_cs = ContextSwitches(a->pid()) - a_cs;
  const double secs = absl::ToDoubleSeconds(window);
  std::cout << absl::StrFormat(
      "idle wake-ups (context switches, all threads) over %s: leaf %.1f/s; "
      "baselines: full device without peers %.1f/s, A (full, the leaf its "
      "only peer) %.1f/s\n",
      absl::FormatDuration(window), leaf_cs / secs, empty_cs / secs,
      a_cs / secs);

  // Bytes of the leaf's unchanged gossip rounds (a leaf pulling every
  // second, so that the window holds many).
  auto r = AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                       {absl::StrCat("leafr", n),
                                        {},
                                        {{"profile", "leaf"},
                                         {"subscribe_kinds", "thumb"},
                                         {"subscribe_variants", "grid@2x"},
                                         {"gossip_interval", "1s"},
                                         {"gossip_jitter", "0"},
                                         {"leaf_ping_interval", "1h"},
                                         {"verbose", "true"}}});
  Check(r.status(), "create R");
  Check((*r)->Start(), "start R");
  Check(Pair(a.get(), r->get(), (*proxy)->address()), "pair R with A");
  absl::SleepFor(absl::Seconds(3));  // first rounds, and any snapshot
  (*proxy)->ResetCounters();
  int rounds0 = CountLines((*r)->log_path(), "] exchange with");
  absl::SleepFor(window);
  int rounds = CountLines((*r)->log_path(), "] exchange with") - rounds0;
  uint64_t bytes = (*proxy)->bytes_up() + (*proxy)->bytes_down();
  std::cout << absl::StrFormat(
      "the leaf's unchanged gossip rounds: %d rounds, %d bytes of TCP "
      "payload both ways: %.0f bytes per round\n",
      rounds, bytes, rounds ? static_cast<double>(bytes) / rounds : 0.0);
  return rounds > 0 ? 0 : 1;
}

// --bench=churn -----------------------------------------------------------

struct LogStats {
  uint64_t log_rows = 0;
  uint64_t live = 0;
  uint64_t bytes = 0;
};

LogStats StatsOf(const std::string& conninfo) {
  auto conn = Connect(conninfo);
  auto r = conn->Exec(
      "SELECT (SELECT count(*) FROM change_log), (SELECT count(*) FROM "
      "sidecars WHERE status = 2), pg_total_relation_size('change_log')");
  Check(r.status(), "stats");
  return {static_cast<uint64_t>(*r->GetInt64(0, 0)),
          static_cast<uint64_t>(*r->GetInt64(0, 1)),
          static_cast<uint64_t>(*r->GetInt64(0, 2))};
}

std::string Describe(const LogStats& s) {
  return absl::StrFormat(
      "%d log rows, %d live (%.2f rows/live), %.1f MB", s.log_rows, s.live,
      static_cast<double>(s.log_rows) / std::max<uint64_t>(s.live, 1),
      s.bytes / 1e6);
}

// Registers keys [0, n) READY with content of round `round`, in API calls.
void RegisterRound(AvailabilityProcess* d, uint64_t n, int round) {
  for (uint64_t base = 0; base < n; base += kMaxKeysPerRequest) {
    v1::RegisterRequest req;
    for (uint64_t i = base; i < std::min(n, base + kMaxKeysPerRequest); ++i) {
      v1::LocalSidecar* s = req.add_sidecars();
      KeyToProto(KeyFor(i), s->mutable_key());
      s->set_size(40000 + (i + round) % 10000);
      Sha256Digest h = Sha256Of(absl::StrCat("bytes-", i, "-", round));
      s->set_sha256(std::string(reinterpret_cast<const char*>(h.data()), 32));
      s->set_status(v1::SIDECAR_STATUS_READY);
      s->set_generator_version("bench");
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(60));
    v1::RegisterResponse resp;
    Check(FromGrpcStatus(d->api()->Register(&ctx, req, &resp)), "Register");
  }
}

int RunChurn(PgServer* pg, const std::string& dir, uint64_t n, int rounds) {
  std::cout << "\n== change log of " << n << " sidecars under " << rounds
            << "x churn ==\n";
  auto d =
      AvailabilityProcess::Create(absl::GetFlag(FLAGS_binary), pg, dir,
                                  {absl::StrCat("churn", n),
                                   {},
                                   {{"tombstone_retention", "0s"},
                                    {"compaction_check_interval", "100ms"}}});
  Check(d.status(), "create device");
  Seed((*d)->conninfo(), n);
  Check((*d)->Start(), "start device");
  const LogStats before = StatsOf((*d)->conninfo());
  std::cout << "before: " << Describe(before) << " (the baseline)\n";
  uint64_t peak_bytes = before.bytes;
  double peak_ratio = 0;
  const absl::Time start = absl::Now();
  for (int round = 1; round <= rounds; ++round) {
    RegisterRound(d->get(), n, round);
    LogStats s = StatsOf((*d)->conninfo());
    peak_bytes = std::max(peak_bytes, s.bytes);
    peak_ratio = std::max(peak_ratio, static_cast<double>(s.log_rows) /
                                          std::max<uint64_t>(s.live, 1));
    std::cout << "after round " << round << ": " << Describe(s) << "\n";
  }
  // Some withdrawn for good: one in ten.
  for (uint64_t base = 0; base < n; base += 10 * kMaxKeysPerRequest) {
    v1::RemoveRequest req;
    for (uint64_t i = base; i < std::min(n, base + 10 * kMaxKeysPerRequest);
         i += 10) {
      KeyToProto(KeyFor(i), req.add_keys());
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(60));
    v1::RemoveResponse resp;
    Check(FromGrpcStatus((*d)->api()->Remove(&ctx, req, &resp)), "Remove");
  }
  const absl::Duration churn = absl::Now() - start;
  // Compaction catches up in the background.
  LogStats after;
  while (true) {
    after = StatsOf((*d)->conninfo());
    peak_bytes = std::max(peak_bytes, after.bytes);
    if (after.log_rows <= after.live) break;  // tombstones gone too
    if (absl::Now() - start > absl::Minutes(30)) break;
    absl::SleepFor(absl::Milliseconds(200));
  }
  std::cout << absl::StrFormat(
      "after %d rounds and removing 1 in 10 (%s): %s\n"
      "  log rows/live %.2f (peak between rounds %.2f; without compaction "
      "%.2f); table bytes after/before %.2f, peak/before %.2f\n",
      rounds, absl::FormatDuration(churn), Describe(after),
      static_cast<double>(after.log_rows) / std::max<uint64_t>(after.live, 1),
      peak_ratio,
      static_cast<double>(n * (rounds + 1) + n / 10) /
          std::max<uint64_t>(after.live, 1),
      static_cast<double>(after.bytes) / before.bytes,
      static_cast<double>(peak_bytes) / before.bytes);
  const bool ok = after.log_rows <= 2 * after.live + 1000;
  if (!ok) std::cerr << "change log above 2x the live sidecars\n";
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace sidecar::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  // A write to a socket whose peer closed (the copy baselines, OpenSSL's
  // included) must fail with EPIPE, not end the benchmark.
  ::signal(SIGPIPE, SIG_IGN);
  char tmpl[] = "/tmp/sidecar-bench-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  sidecar::testing::PgServerOptions opts;
  sidecar::testing::PgServer pg(opts);
  sidecar::bench::Check(pg.Start(), "start PostgreSQL");
  int rc = 0;
  for (const std::string& bench : absl::GetFlag(FLAGS_bench)) {
    if (bench == "scale") {
      for (const std::string& s : absl::GetFlag(FLAGS_scales)) {
        uint64_t n = 0;
        if (!absl::SimpleAtoi(s, &n) || n == 0) {
          std::cerr << "bad scale " << s << "\n";
          return 2;
        }
        sidecar::bench::RunScale(&pg, dir, n);
      }
    } else if (bench == "busy") {
      rc |=
          sidecar::bench::RunBusy(&pg, dir, absl::GetFlag(FLAGS_busy_entries));
    } else if (bench == "start") {
      for (const std::string& s : absl::GetFlag(FLAGS_start_entries)) {
        uint64_t n = 0;
        if (!absl::SimpleAtoi(s, &n) || n == 0) {
          std::cerr << "bad --start_entries " << s << "\n";
          return 2;
        }
        rc |= sidecar::bench::RunStart(&pg, dir, n);
      }
    } else if (bench == "leaf") {
      rc |=
          sidecar::bench::RunLeaf(&pg, dir, absl::GetFlag(FLAGS_leaf_entries));
    } else if (bench == "churn") {
      rc |=
          sidecar::bench::RunChurn(&pg, dir, absl::GetFlag(FLAGS_churn_entries),
                                   absl::GetFlag(FLAGS_churn_rounds));
    } else {
      std::cerr << "unknown --bench " << bench
                << " (scale, busy, start, churn, leaf)\n";
      return 2;
    }
  }
  std::cout << "\n(work dir " << dir << ")\n";
  return rc;
}
