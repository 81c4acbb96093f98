// End-to-end benchmarks of the transfer service with real processes (two
// devices, each availability + transfer, a private PostgreSQL, gRPC over
// loopback), each figure beside baselines measured in the same run on the
// same files and the same disk:
//
//  large   one sidecar (default 1 GiB) fetched, verified and committed by
//          device B from device A, Fetch until WatchJob says DONE; against
//          nginx serving the same file to `curl -o FILE` followed by
//          `openssl dgst -sha256 FILE`.
//  thumbs  N thumbnails (default 10,000 of 45,000 random bytes): Fetch in
//          calls of --fetch_batch keys, until every job is DONE; against
//          (a) an rsync daemon (`rsync -a rsync://.../mod/ dst/`), (b) one
//          keep-alive curl fetching every URL from nginx (--config file of
//          url/output lines, one connection), (c) `tar -C src -cf - . |
//          tar -C dst -xf -` (the file-creation floor). Also jobs/s and the
//          CPU seconds each process spent during our fetch.
//
//   transfer_bench --bench=large,thumbs --runs=3 --data_dir=/tmp
//
// Each run measures ours and every baseline back to back (order rotated
// per run, `sync` before each), and the medians and ratios ours/baseline
// are printed at the end.
//
// A second client mode, for tests/bench/netns_foreground.sh, measures how
// long an interactive thumbnail fetch takes with the link idle and while
// background work loads it, side by side in one run:
//
//   transfer_bench --mode=foreground --transfer=HOST:PORT
//       --availability=HOST:PORT --interactive_file=FILE
//       --prefetch_file=FILE --proxy=URI [--samples=5]
//
// Each file lists sidecar URIs, one per line; every interactive fetch takes
// a key not fetched before (2 x --samples per load, 4 loads' worth).
//
// A client mode for the namespace benchmark (tests/bench/netns_multisource.sh)
// fetches sidecars through a running transfer service and reports the time
// and the source:
//
//   transfer_bench --mode=fetch --transfer=HOST:PORT [--availability=HOST:PORT]
//       sidecar://UUID/thumbs/grid@2x.webp ...
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/transport.h"
#include "common/uuid.h"
#include "sidecar/v1/availability.grpc.pb.h"
#include "sidecar/v1/transfer.grpc.pb.h"
#include "tests/support/availability_process.h"
#include "tests/support/pg_server.h"
#include "tests/support/process.h"
#include "tests/support/test_data.h"
#include "tests/support/transfer_process.h"

ABSL_FLAG(std::string, mode, "bench", "bench, or fetch (client mode)");
ABSL_FLAG(std::vector<std::string>, bench,
          std::vector<std::string>({"large", "thumbs"}),
          "benchmarks to run: large, thumbs");
ABSL_FLAG(int, runs, 3, "runs of each measurement (medians are reported)");
ABSL_FLAG(std::string, data_dir, "/tmp",
          "parent of the working directory: a disk, not tmpfs; sources, "
          "destinations and baselines all live there");
ABSL_FLAG(uint64_t, large_bytes, 1ull << 30, "size of the large sidecar");
ABSL_FLAG(int, thumbs, 10000, "number of thumbnails");
ABSL_FLAG(int, thumb_bytes, 45000, "bytes of each thumbnail");
ABSL_FLAG(int, fetch_batch, 1000, "keys per Fetch call");
ABSL_FLAG(std::vector<std::string>, transfer_flags, {},
          "extra name=value flags of B's sidecar-transfer, e.g. workers=8");
ABSL_FLAG(bool, metrics, false,
          "every service records and serves Prometheus metrics "
          "(--metrics_listen=127.0.0.1:0), to measure what they cost");
ABSL_FLAG(std::string, nginx, "/usr/sbin/nginx", "nginx binary");
ABSL_FLAG(std::string, rsync, "/usr/bin/rsync", "rsync binary");
ABSL_FLAG(bool, keep, false, "keep the working directory");
ABSL_FLAG(std::vector<std::string>, baselines,
          std::vector<std::string>({"rsync", "curl", "tar"}),
          "baselines to run beside ours: rsync, curl, tar (large: curl "
          "only; none: "
          "--baselines= , e.g. while profiling ours)");
ABSL_FLAG(std::string, dest_fs, "fresh",
          "where B's store and the baselines' destinations live: fresh (a "
          "new journaled ext4 on a loop device, backed by a sparse file in "
          "the working directory; needs root) or data_dir (the working "
          "directory itself)");
ABSL_FLAG(bool, pg_stats, false,
          "load pg_stat_statements and print, after the thumbs benchmark, "
          "the statements that took the most PostgreSQL time");
ABSL_FLAG(std::string, availability_bin, AVAILABILITY_BIN,
          "sidecar-availability");
ABSL_FLAG(std::string, transfer_bin, TRANSFER_BIN, "sidecar-transfer");
// Client mode.
ABSL_FLAG(std::string, transfer, "", "fetch mode: the transfer service");
ABSL_FLAG(std::string, availability, "",
          "fetch mode: the same device's availability service (prints the "
          "ranked sources of each sidecar before fetching)");
ABSL_FLAG(absl::Duration, timeout, absl::Minutes(10), "fetch mode: deadline");
ABSL_FLAG(std::string, interactive_file, "",
          "foreground mode: URIs fetched one at a time, interactive");
ABSL_FLAG(std::string, prefetch_file, "",
          "foreground mode: URIs fetched as prefetch (the first load)");
ABSL_FLAG(std::string, proxy, "",
          "foreground mode: a large sidecar fetched at normal priority (the "
          "second load)");
ABSL_FLAG(int, samples, 5, "foreground mode: interactive fetches per phase");
ABSL_FLAG(std::string, rx_interface, "",
          "foreground mode: the network interface the loads arrive on (its "
          "received bytes tell how fast they moved meanwhile)");
ABSL_FLAG(int, wait_sources, 0,
          "fetch mode, with --availability: first wait (up to 60 s) until "
          "Resolve lists at least this many sources of each sidecar");

namespace sidecar::bench {
namespace {

using testing::AvailabilityProcess;
using testing::PgServer;
using testing::RandomBytes;
using testing::RandomKeyProto;
using testing::TransferProcess;

// Thrown so that destructors run (PostgreSQL stopped, children killed).
struct Fatal {
  std::string what;
};
[[noreturn]] void Die(const std::string& what) { throw Fatal{what}; }
void Check(const absl::Status& s, const std::string& what) {
  if (!s.ok()) Die(absl::StrCat(what, ": ", s.ToString()));
}
void CheckRpc(const grpc::Status& s, const std::string& what) {
  if (!s.ok()) Die(absl::StrCat(what, ": ", s.error_message()));
}

double Secs(absl::Time since) {
  return absl::ToDoubleSeconds(absl::Now() - since);
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// Runs a shell command line; dies if it fails.
void Sh(const std::string& cmd, const std::string& log) {
  absl::StatusOr<int> rc =
      testing::RunCommand({"/bin/sh", "-c", cmd}, {}, log, absl::Minutes(30));
  if (!rc.ok() || *rc != 0) {
    Die(absl::StrCat(
        "`", cmd, "` failed (",
        rc.ok() ? absl::StrCat("exit ", *rc) : rc.status().ToString(),
        "); see ", log, "\n", testing::ReadTail(log)));
  }
}

// Flushes dirty pages so one measurement's write-back does not land in the
// next one.
void Settle() {
  ::sync();
  absl::SleepFor(absl::Milliseconds(300));
}

bool PortOpen(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}
void WaitPort(int port, const std::string& what, const std::string& log) {
  absl::Time start = absl::Now();
  while (!PortOpen(port)) {
    if (absl::Now() - start > absl::Seconds(20)) {
      Die(absl::StrCat(what, " did not listen on ", port, "\n",
                       testing::ReadTail(log)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

size_t CountFiles(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (ec) break;
    if (it->is_regular_file()) ++n;
  }
  return n;
}

void RemoveAll(const std::string& p) {
  std::error_code ec;
  std::filesystem::remove_all(p, ec);
}

// CPU seconds (user + system) of the running processes, by label: the
// process name, with " A" / " B" appended when its command line names that
// device's sidecar root. Exited processes are not counted.
std::map<std::string, double> CpuByProcess(const std::string& root_a,
                                           const std::string& root_b) {
  std::map<std::string, double> out;
  static const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return out;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string base = absl::StrCat("/proc/", e->d_name);
    std::ifstream st(base + "/stat");
    std::string stat((std::istreambuf_iterator<char>(st)), {});
    size_t open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos) continue;
    std::string comm = stat.substr(open + 1, close - open - 1);
    if (comm.rfind("sidecar-", 0) != 0 && comm != "postgres") continue;
    std::vector<std::string> f =
        absl::StrSplit(stat.substr(close + 2), ' ', absl::SkipEmpty());
    // After ")": field 3 is state; utime and stime are fields 14 and 15.
    if (f.size() < 13) continue;
    double cpu = (std::stod(f[11]) + std::stod(f[12])) / tick;
    std::ifstream cl(base + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(cl)), {});
    std::string label = comm;
    if (!root_b.empty() && cmd.find(root_b) != std::string::npos) {
      label += " B";
    } else if (!root_a.empty() && cmd.find(root_a) != std::string::npos) {
      label += " A";
    }
    out[label] += cpu;
  }
  ::closedir(d);
  return out;
}

// ---- devices -----------------------------------------------------------

struct Device {
  std::unique_ptr<AvailabilityProcess> avail;
  std::unique_ptr<TransferProcess> xfer;
  std::string id;
  std::string root() const { return avail->sidecar_root(); }
};

std::unique_ptr<Device> MakeDevice(PgServer* pg, const std::string& dir,
                                   const std::string& name,
                                   std::vector<AvailabilityProcess*> pair_with,
                                   std::map<std::string, std::string> xflags) {
  auto d = std::make_unique<Device>();
  std::map<std::string, std::string> aflags = {{"prompt_delay", "50ms"},
                                               {"ping_interval", "1s"},
                                               {"offline_after", "20s"}};
  if (absl::GetFlag(FLAGS_metrics)) {
    aflags["metrics_listen"] = xflags["metrics_listen"] = "127.0.0.1:0";
  }
  auto a = AvailabilityProcess::Create(absl::GetFlag(FLAGS_availability_bin),
                                       pg, dir, {name, {}, aflags});
  Check(a.status(), "availability " + name);
  d->avail = std::move(*a);
  auto x = TransferProcess::Create(absl::GetFlag(FLAGS_transfer_bin), pg, dir,
                                   name, d->avail->state_dir(),
                                   d->avail->sidecar_root(), xflags);
  Check(x.status(), "transfer " + name);
  d->xfer = std::move(*x);
  // The availability service first (it makes the device key); the
  // transfer service announces the port it bound to it.
  Check(d->avail->Start(), "starting availability " + name);
  Check(d->xfer->Start(), "starting transfer " + name);
  // Paired as a person would: a code from the other device, given here.
  for (AvailabilityProcess* other : pair_with) {
    Check(Pair(other, d->avail.get()), "pairing " + name);
  }
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  v1::DeviceInfo info;
  CheckRpc(d->avail->api()->GetDevice(&ctx, {}, &info), "GetDevice");
  d->id = info.device_id();
  return d;
}

std::map<std::string, std::string> BFlags() {
  // The fetches timed are the benchmark's own: no prefetch racing them
  // (--transfer_flags=prefetch_kinds=thumb to measure with it).
  std::map<std::string, std::string> f = {{"prefetch_kinds", ""}};
  for (const std::string& kv : absl::GetFlag(FLAGS_transfer_flags)) {
    std::pair<std::string, std::string> p = absl::StrSplit(kv, '=');
    f[p.first] = p.second;
  }
  return f;
}

std::string RelPath(const v1::SidecarKey& k) {
  return RelativePath(*KeyFromProto(k));
}

void RegisterReady(Device* d, const std::vector<v1::SidecarKey>& keys,
                   const std::vector<uint64_t>& sizes,
                   const std::vector<Sha256Digest>& digests) {
  for (size_t at = 0; at < keys.size(); at += 10000) {
    v1::RegisterRequest req;
    for (size_t i = at; i < std::min(keys.size(), at + 10000); ++i) {
      v1::LocalSidecar* l = req.add_sidecars();
      *l->mutable_key() = keys[i];
      l->set_size(sizes[i]);
      l->set_sha256(std::string(DigestBytes(digests[i])));
      l->set_status(v1::SIDECAR_STATUS_READY);
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(120));
    v1::RegisterResponse resp;
    CheckRpc(d->avail->api()->Register(&ctx, req, &resp), "Register");
  }
}

// Waits until the device of `avail` knows an online remote holder of every
// key.
void WaitKnown(v1::Availability::Stub* avail,
               const std::vector<v1::SidecarKey>& keys) {
  absl::Time start = absl::Now();
  while (true) {
    size_t known = 0;
    for (size_t at = 0; at < keys.size(); at += 10000) {
      v1::WhoHasRequest req;
      for (size_t i = at; i < std::min(keys.size(), at + 10000); ++i) {
        *req.add_keys() = keys[i];
      }
      grpc::ClientContext ctx;
      SetDeadline(&ctx, absl::Seconds(60));
      v1::WhoHasResponse resp;
      CheckRpc(avail->WhoHas(&ctx, req, &resp), "WhoHas");
      for (const auto& r : resp.results()) {
        for (const auto& h : r.holders()) {
          if (!resp.devices(h.device()).is_local() &&
              resp.devices(h.device()).online()) {
            ++known;
            break;
          }
        }
      }
    }
    if (known == keys.size()) return;
    if (absl::Now() - start > absl::Seconds(120)) {
      Die(absl::StrCat("the device knows holders of only ", known, " of ",
                       keys.size(), " keys after 120 s"));
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

// Makes B forget the keys (Remove) and deletes its files, so the next run
// fetches them again.
void Forget(Device* b, const std::vector<v1::SidecarKey>& keys) {
  for (size_t at = 0; at < keys.size(); at += 10000) {
    v1::RemoveRequest req;
    for (size_t i = at; i < std::min(keys.size(), at + 10000); ++i) {
      *req.add_keys() = keys[i];
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(120));
    v1::RemoveResponse resp;
    CheckRpc(b->avail->api()->Remove(&ctx, req, &resp), "Remove");
  }
  RemoveAll(b->root() + "/content");
}

v1::JobStatus WatchUntilEnd(v1::Transfer::Stub* api, const std::string& id,
                            absl::Duration timeout) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout);
  v1::WatchJobRequest req;
  req.set_job_id(id);
  auto reader = api->WatchJob(&ctx, req);
  v1::JobStatus s, last;
  while (reader->Read(&s)) last = s;
  grpc::Status st = reader->Finish();
  if (!st.ok() && last.job_id().empty()) {
    last.set_last_error(st.error_message());
  }
  return last;
}

// Fetch of `keys` in calls of --fetch_batch; returns the job ids. Dies on
// an outcome other than QUEUED.
std::vector<std::string> FetchAll(v1::Transfer::Stub* api,
                                  const std::vector<v1::SidecarKey>& keys,
                                  v1::Priority priority, double* fetch_secs) {
  std::vector<std::string> ids;
  const size_t batch = absl::GetFlag(FLAGS_fetch_batch);
  absl::Time t0 = absl::Now();
  for (size_t at = 0; at < keys.size(); at += batch) {
    v1::FetchRequest req;
    req.set_priority(priority);
    for (size_t i = at; i < std::min(keys.size(), at + batch); ++i) {
      *req.add_keys() = keys[i];
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Minutes(5));
    v1::FetchResponse resp;
    CheckRpc(api->Fetch(&ctx, req, &resp), "Fetch");
    for (const auto& r : resp.results()) {
      if (r.outcome() != v1::FetchResult::OUTCOME_QUEUED) {
        Die(absl::StrCat("Fetch outcome ",
                         v1::FetchResult::Outcome_Name(r.outcome()), ": ",
                         r.reason()));
      }
      ids.push_back(r.job_id());
    }
  }
  if (fetch_secs) *fetch_secs = Secs(t0);
  return ids;
}

// ---- nginx, rsync ---------------------------------------------------------

// Whether --baselines names `name`.
bool WantsBaseline(const std::string& name) {
  const std::vector<std::string> b = absl::GetFlag(FLAGS_baselines);
  return std::find(b.begin(), b.end(), name) != b.end();
}

struct Servers {
  std::optional<testing::ChildProcess> nginx, rsyncd;
  int nginx_port = 0, rsync_port = 0;
  // nginx serves HTTPS (TLS 1.3 only, an Ed25519 certificate like the
  // devices'), since ours is mutual TLS.
  std::string NginxUrl(const std::string& rel) const {
    return absl::StrCat("https://127.0.0.1:", nginx_port, "/", rel);
  }
};

// curl against the HTTPS baseline: TLS 1.3, the self-signed certificate
// not checked (ours checks the pinned one, which costs nothing extra).
constexpr char kCurl[] = "curl -k --tlsv1.3 -s -f";

void StartNginx(Servers* s, const std::string& dir, const std::string& root) {
  std::filesystem::create_directories(dir + "/nginx");
  s->nginx_port = *testing::PickUnusedPort();
  std::string conf = dir + "/nginx/nginx.conf";
  Sh(absl::StrCat("openssl req -x509 -newkey ed25519 -nodes -days 2 -subj "
                  "/CN=localhost -keyout ",
                  dir, "/nginx/key.pem -out ", dir, "/nginx/cert.pem"),
     dir + "/nginx/openssl.log");
  std::ofstream(conf) << absl::StrFormat(
      R"(%s
worker_processes 1;
pid %s/nginx/nginx.pid;
error_log %s/nginx/error.log;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  default_type application/octet-stream;
  client_body_temp_path %s/nginx;
  proxy_temp_path %s/nginx;
  fastcgi_temp_path %s/nginx;
  uwsgi_temp_path %s/nginx;
  scgi_temp_path %s/nginx;
  server {
    listen 127.0.0.1:%d ssl;
    ssl_certificate %s/nginx/cert.pem;
    ssl_certificate_key %s/nginx/key.pem;
    ssl_protocols TLSv1.3;
    root %s;
  }
}
)",
      ::geteuid() == 0 ? "user root;" : "", dir, dir, dir, dir, dir, dir, dir,
      s->nginx_port, dir, dir, root);
  std::string log = dir + "/nginx/stderr.log";
  auto c = testing::ChildProcess::Spawn(
      {absl::GetFlag(FLAGS_nginx), "-e", dir + "/nginx/error.log", "-p",
       dir + "/nginx", "-c", conf, "-g", "daemon off;"},
      {}, log);
  Check(c.status(), "nginx (apt-get install nginx-light)");
  s->nginx = std::move(*c);
  WaitPort(s->nginx_port, "nginx", log);
}

void StartRsyncd(Servers* s, const std::string& dir, const std::string& path) {
  std::filesystem::create_directories(dir + "/rsyncd");
  s->rsync_port = *testing::PickUnusedPort();
  std::string conf = dir + "/rsyncd/rsyncd.conf";
  std::ofstream(conf) << absl::StrFormat(
      "use chroot = no\npid file = %s/rsyncd/rsyncd.pid\n"
      "log file = %s/rsyncd/rsyncd.log\n%s"
      "[mod]\n  path = %s\n  read only = yes\n",
      dir, dir, ::geteuid() == 0 ? "uid = root\ngid = root\n" : "", path);
  std::string log = dir + "/rsyncd/stderr.log";
  auto c = testing::ChildProcess::Spawn(
      {absl::GetFlag(FLAGS_rsync), "--daemon", "--no-detach",
       "--address=127.0.0.1", absl::StrCat("--port=", s->rsync_port),
       "--config=" + conf},
      {}, log);
  Check(c.status(), "rsync daemon (apt-get install rsync)");
  s->rsyncd = std::move(*c);
  WaitPort(s->rsync_port, "rsync daemon", log);
}

// ---- results --------------------------------------------------------------

struct Table {
  std::vector<std::string> order;
  std::map<std::string, std::vector<double>> secs;
  void Add(const std::string& name, double s) {
    if (!secs.count(name)) order.push_back(name);
    secs[name].push_back(s);
  }
  void Print(const std::string& title, const std::string& ours,
             const std::string& unit_note) const {
    std::cout << "\n== " << title << " ==\n";
    double m_ours = Median(secs.at(ours));
    for (const std::string& n : order) {
      std::vector<double> v = secs.at(n);
      std::vector<std::string> runs;
      for (double x : v) runs.push_back(absl::StrFormat("%.2f", x));
      double m = Median(v);
      std::cout << absl::StrFormat("  %-44s median %8.3f s  runs [%s]", n, m,
                                   absl::StrJoin(runs, ", "));
      if (n != ours) {
        // Ratio per run (same run, side by side) and of the medians.
        std::vector<double> r;
        for (size_t i = 0; i < v.size() && i < secs.at(ours).size(); ++i) {
          r.push_back(secs.at(ours)[i] / v[i]);
        }
        std::cout << absl::StrFormat(
            "  ours/this: median-of-ratios %.2f, ratio-of-medians %.2f",
            Median(r), m_ours / m);
      }
      std::cout << "\n";
    }
    if (!unit_note.empty()) std::cout << "  " << unit_note << "\n";
    std::cout.flush();
  }
};

// ---- large ----------------------------------------------------------------

void BenchLarge(PgServer* pg, const std::string& work,
                const std::string& dest) {
  const uint64_t size = absl::GetFlag(FLAGS_large_bytes);
  const int runs = absl::GetFlag(FLAGS_runs);
  std::string dir = work + "/large";
  std::string out_dir = dest + "/large";
  std::filesystem::create_directories(dir);
  std::filesystem::create_directories(out_dir);
  auto a = MakeDevice(pg, dir, "large_a", {}, {});
  auto b = MakeDevice(pg, out_dir, "large_b", {a->avail.get()}, BFlags());

  v1::SidecarKey key = RandomKeyProto(v1::SIDECAR_KIND_PROXY, "proxy_edit",
                                      v1::SIDECAR_FORMAT_MP4);
  std::string rel = RelPath(key);
  std::string src = a->root() + "/" + rel;
  std::filesystem::create_directories(std::filesystem::path(src).parent_path());
  std::cout << "writing " << size << " random bytes to " << src << "\n";
  {
    std::ofstream out(src, std::ios::binary);
    const size_t block = 8 << 20;
    for (uint64_t at = 0; at < size; at += block) {
      std::string chunk = RandomBytes(std::min<uint64_t>(block, size - at), at);
      out.write(chunk.data(), chunk.size());
    }
  }
  absl::StatusOr<Sha256Digest> digest = Sha256OfFile(src);
  Check(digest.status(), "hashing the source");
  const std::string hex = DigestToHex(*digest);
  RegisterReady(a.get(), {key}, {size}, {*digest});
  WaitKnown(b->avail->api(), {key});

  const bool with_curl = WantsBaseline("curl");
  Servers servers;
  if (with_curl) StartNginx(&servers, dir, a->root());
  const std::string url = servers.NginxUrl(rel);
  const std::string out = out_dir + "/curl-out.bin";
  const std::string log = dir + "/baseline.log";

  // Warm-up (not timed): HTTP/2 windows, page cache of the source, first
  // job of the fetcher.
  {
    std::vector<std::string> ids =
        FetchAll(b->xfer->api(), {key}, v1::PRIORITY_INTERACTIVE, nullptr);
    v1::JobStatus s = WatchUntilEnd(b->xfer->api(), ids[0], absl::Minutes(10));
    if (s.state() != v1::JOB_STATE_DONE)
      Die("warm-up fetch: " + s.last_error());
    Forget(b.get(), {key});
    if (with_curl) Sh(absl::StrCat(kCurl, " -o ", out, " '", url, "'"), log);
    RemoveAll(out);
  }

  Table t;
  const std::string kOurs = "ours: Fetch..DONE (verified, committed)";
  const std::string kCurlName = "nginx HTTPS -> curl -o + openssl dgst -sha256";
  for (int r = 0; r < runs; ++r) {
    auto ours = [&] {
      Forget(b.get(), {key});
      WaitKnown(b->avail->api(), {key});
      Settle();
      absl::Time t0 = absl::Now();
      std::vector<std::string> ids =
          FetchAll(b->xfer->api(), {key}, v1::PRIORITY_INTERACTIVE, nullptr);
      v1::JobStatus s =
          WatchUntilEnd(b->xfer->api(), ids[0], absl::Minutes(10));
      double secs = Secs(t0);
      if (s.state() != v1::JOB_STATE_DONE) Die("fetch: " + s.last_error());
      if (std::filesystem::file_size(s.local_path()) != size) {
        Die("fetched file has the wrong size");
      }
      t.Add(kOurs, secs);
      std::cout << absl::StrFormat("  run %d ours %.3f s (%s)\n", r, secs,
                                   s.reason());
    };
    auto curl = [&] {
      RemoveAll(out);
      Settle();
      absl::Time t0 = absl::Now();
      Sh(absl::StrCat(kCurl, " -o ", out, " '", url,
                      "' && openssl dgst -sha256 ", out, " > ", out, ".sha"),
         log);
      double secs = Secs(t0);
      std::ifstream in(out + ".sha");
      std::string line((std::istreambuf_iterator<char>(in)), {});
      if (line.find(hex) == std::string::npos)
        Die("curl copy differs: " + line);
      t.Add(kCurlName, secs);
      std::cout << absl::StrFormat("  run %d curl %.3f s\n", r, secs);
      RemoveAll(out);
    };
    if (!with_curl) {
      ours();
    } else if (r % 2 == 0) {
      ours();
      curl();
    } else {
      curl();
      ours();
    }
  }
  t.Print(absl::StrCat("large: one ", size, " B sidecar over loopback"), kOurs,
          absl::StrFormat("ours median throughput %.0f MB/s",
                          size / Median(t.secs[kOurs]) / 1e6));
  Forget(b.get(), {key});
  if (servers.nginx) servers.nginx->Terminate(absl::Seconds(5));
}

// ---- thumbs ---------------------------------------------------------------

// Prints the statements that took the most time in PostgreSQL (all
// databases), from pg_stat_statements (see --pg_stats).
void PrintPgStats(PgServer* pg, const std::string& log) {
  const std::string psql =
      absl::StrCat("psql -X -q \"", pg->ConnInfo("postgres"), "\" -c ");
  Sh(psql + "'CREATE EXTENSION IF NOT EXISTS pg_stat_statements'", log);
  std::cout << "  PostgreSQL statements by total time (all runs):\n";
  std::fflush(stdout);
  Sh(psql +
         "\"SELECT calls, round(total_exec_time::numeric, 0) AS ms, "
         "round((total_exec_time / calls * 1000)::numeric, 0) AS us_per_call, "
         "rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110) AS query "
         "FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 15\"",
     log + ".pg_stats");
  std::ifstream in(log + ".pg_stats");
  std::cout << in.rdbuf();
}

void BenchThumbs(PgServer* pg, const std::string& work,
                 const std::string& dest) {
  const int n = absl::GetFlag(FLAGS_thumbs);
  const size_t bytes = absl::GetFlag(FLAGS_thumb_bytes);
  const int runs = absl::GetFlag(FLAGS_runs);
  std::string dir = work + "/thumbs";
  std::string out_dir = dest + "/thumbs";
  std::filesystem::create_directories(dir);
  std::filesystem::create_directories(out_dir);
  auto a = MakeDevice(pg, dir, "thumbs_a", {}, {});
  auto b = MakeDevice(pg, out_dir, "thumbs_b", {a->avail.get()}, BFlags());

  std::cout << "writing " << n << " thumbnails of " << bytes << " B\n";
  std::vector<v1::SidecarKey> keys;
  std::vector<uint64_t> sizes;
  std::vector<Sha256Digest> digests;
  std::vector<std::string> rels;
  for (int i = 0; i < n; ++i) {
    v1::SidecarKey k = RandomKeyProto(v1::SIDECAR_KIND_THUMB, "grid@2x",
                                      v1::SIDECAR_FORMAT_WEBP);
    std::string data = RandomBytes(bytes, 1000 + i);
    std::string rel = RelPath(k);
    std::string path = a->root() + "/" + rel;
    std::filesystem::create_directories(
        std::filesystem::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << data;
    keys.push_back(k);
    sizes.push_back(data.size());
    digests.push_back(Sha256Of(data));
    rels.push_back(rel);
  }
  RegisterReady(a.get(), keys, sizes, digests);
  WaitKnown(b->avail->api(), keys);

  // Only the baselines asked for: the smoke run under ctest asks for none,
  // and a fresh machine has neither nginx nor rsync.
  Servers servers;
  if (WantsBaseline("curl")) StartNginx(&servers, dir, a->root());
  if (WantsBaseline("rsync")) {
    StartRsyncd(&servers, dir, a->root() + "/content");
  }
  const std::string log = dir + "/baseline.log";
  const std::string dst = out_dir + "/dst";
  const std::string curl_cfg = dir + "/curl.cfg";
  {
    std::ofstream cfg(curl_cfg);
    for (const std::string& rel : rels) {
      cfg << "url = \"" << servers.NginxUrl(rel) << "\"\noutput = \"" << dst
          << "/" << rel << "\"\n";
    }
  }
  // Warm the source's page cache for everyone.
  Sh(absl::StrCat("tar -C ", a->root(), "/content -cf - . > /dev/null"), log);

  Table t;
  const std::string kOurs =
      absl::StrCat("ours: Fetch x",
                   (n + absl::GetFlag(FLAGS_fetch_batch) - 1) /
                       absl::GetFlag(FLAGS_fetch_batch),
                   " calls..all DONE");
  const std::string kRsync = "rsync daemon (rsync -a rsync://)";
  const std::string kCurlName = "nginx HTTPS + one keep-alive curl";
  const std::string kTar = "tar | tar (file-creation floor)";
  std::vector<double> fetch_call_secs;
  std::map<std::string, std::vector<double>> cpu;
  for (int r = 0; r < runs; ++r) {
    auto ours = [&] {
      Forget(b.get(), keys);
      WaitKnown(b->avail->api(), keys);
      Settle();
      auto cpu0 = CpuByProcess(a->root(), b->root());
      absl::Time t0 = absl::Now();
      double fetch_secs = 0;
      std::vector<std::string> ids =
          FetchAll(b->xfer->api(), keys, v1::PRIORITY_NORMAL, &fetch_secs);
      // Wait until no job is active (polling one row, cheap for the
      // server), then check every job's final state outside the timing.
      while (true) {
        grpc::ClientContext ctx;
        SetDeadline(&ctx, absl::Seconds(30));
        v1::ListJobsRequest req;
        req.set_active_only(true);
        req.set_limit(1);
        v1::ListJobsResponse resp;
        CheckRpc(b->xfer->api()->ListJobs(&ctx, req, &resp), "ListJobs");
        if (resp.jobs_size() == 0) break;
        if (absl::Now() - t0 > absl::Minutes(30)) Die("thumbs never finished");
        absl::SleepFor(absl::Milliseconds(50));
      }
      double secs = Secs(t0);
      auto cpu1 = CpuByProcess(a->root(), b->root());
      for (auto& [k, v] : cpu1) cpu[k].push_back(v - cpu0[k]);
      size_t done = 0;
      std::string first_bad;
      for (const std::string& id : ids) {
        v1::JobStatus s = WatchUntilEnd(b->xfer->api(), id, absl::Seconds(30));
        if (s.state() == v1::JOB_STATE_DONE) {
          ++done;
        } else if (first_bad.empty()) {
          first_bad = absl::StrCat(v1::JobState_Name(s.state()), ": ",
                                   s.reason(), " ", s.last_error());
        }
      }
      if (done != ids.size()) {
        Die(absl::StrCat(done, " of ", ids.size(), " jobs DONE; ", first_bad));
      }
      size_t files = CountFiles(b->root() + "/content");
      if (files != keys.size()) Die(absl::StrCat("B has ", files, " files"));
      t.Add(kOurs, secs);
      fetch_call_secs.push_back(fetch_secs);
      std::cout << absl::StrFormat(
          "  run %d ours %.3f s = %.0f jobs/s (Fetch calls %.2f s)\n", r, secs,
          n / secs, fetch_secs);
    };
    auto timed = [&](const std::string& name, const std::string& cmd) {
      RemoveAll(dst);
      std::filesystem::create_directories(dst);
      Settle();
      absl::Time t0 = absl::Now();
      Sh(cmd, log);
      double secs = Secs(t0);
      size_t files = CountFiles(dst);
      if (files != keys.size()) {
        Die(absl::StrCat(name, ": ", files, " files in the destination"));
      }
      t.Add(name, secs);
      std::cout << absl::StrFormat("  run %d %s %.3f s\n", r, name, secs);
    };
    auto rsync = [&] {
      timed(kRsync, absl::StrCat(absl::GetFlag(FLAGS_rsync),
                                 " -a rsync://127.0.0.1:", servers.rsync_port,
                                 "/mod/ ", dst, "/content/"));
    };
    auto curl = [&] {
      timed(kCurlName,
            absl::StrCat(kCurl, " --create-dirs --config ", curl_cfg));
    };
    auto tar = [&] {
      std::filesystem::create_directories(dst);
      timed(kTar,
            absl::StrCat("mkdir -p ", dst, "/content && tar -C ", a->root(),
                         "/content -cf - . | tar -C ", dst, "/content -xf -"));
    };
    std::vector<std::function<void()>> steps = {ours};
    for (const std::string& name : absl::GetFlag(FLAGS_baselines)) {
      if (name == "rsync") {
        steps.push_back(rsync);
      } else if (name == "curl") {
        steps.push_back(curl);
      } else if (name == "tar") {
        steps.push_back(tar);
      } else {
        Die("unknown baseline " + name);
      }
    }
    std::rotate(steps.begin(), steps.begin() + (r % steps.size()), steps.end());
    for (auto& s : steps) s();
  }
  RemoveAll(dst);
  t.Print(absl::StrCat("thumbs: ", n, " x ", bytes, " B"), kOurs,
          absl::StrFormat("ours median %.0f jobs/s; of which the Fetch calls "
                          "(Resolve + job insert per key) took median %.2f s",
                          n / Median(t.secs[kOurs]), Median(fetch_call_secs)));
  std::cout << "  CPU seconds during our fetch (median over runs; A = source, "
               "B = fetcher; postgres = all backends):\n";
  for (auto& [k, v] : cpu) {
    double m = Median(v);
    if (m >= 0.05) std::cout << absl::StrFormat("    %-22s %7.2f s\n", k, m);
  }
  if (absl::GetFlag(FLAGS_pg_stats)) PrintPgStats(pg, log);
  Forget(b.get(), keys);
  if (servers.nginx) servers.nginx->Terminate(absl::Seconds(5));
  if (servers.rsyncd) servers.rsyncd->Terminate(absl::Seconds(5));
}

// ---- client mode ------------------------------------------------------------

int FetchMode(const std::vector<char*>& args) {
  std::string target = absl::GetFlag(FLAGS_transfer);
  if (target.empty() || args.size() < 2) {
    std::cerr << "usage: transfer_bench --mode=fetch --transfer=HOST:PORT "
                 "[--availability=HOST:PORT] URI...\n";
    return 2;
  }
  auto api = v1::Transfer::NewStub(MakeLocalChannel(target));
  std::unique_ptr<v1::Availability::Stub> avail;
  if (!absl::GetFlag(FLAGS_availability).empty()) {
    avail = v1::Availability::NewStub(
        MakeLocalChannel(absl::GetFlag(FLAGS_availability)));
  }
  std::vector<v1::SidecarKey> keys;
  for (size_t i = 1; i < args.size(); ++i) {
    absl::StatusOr<SidecarKey> k = ParseSidecarUri(args[i]);
    Check(k.status(), args[i]);
    v1::SidecarKey p;
    KeyToProto(*k, &p);
    keys.push_back(p);
    if (avail) {
      v1::ResolveResponse resp;
      absl::Time since = absl::Now();
      while (true) {
        v1::ResolveRequest req;
        *req.mutable_key() = p;
        req.set_mode(v1::RESOLVE_MODE_FETCH_ONLY);
        grpc::ClientContext ctx;
        SetDeadline(&ctx, absl::Seconds(10));
        resp.Clear();
        CheckRpc(avail->Resolve(&ctx, req, &resp), "Resolve");
        if (resp.sources_size() >= absl::GetFlag(FLAGS_wait_sources)) break;
        if (absl::Now() - since > absl::Seconds(60)) {
          Die(absl::StrCat(args[i], ": only ", resp.sources_size(),
                           " sources after 60 s"));
        }
        absl::SleepFor(absl::Milliseconds(100));
      }
      std::cout << "resolve " << args[i] << ": "
                << v1::ResolveResponse::Outcome_Name(resp.outcome()) << "\n";
      for (int s = 0; s < resp.sources_size(); ++s) {
        const auto& src = resp.sources(s);
        std::cout << absl::StrFormat(
            "  source %d: %s at %s rtt %u us throughput %.1f Mbit/s\n", s,
            src.name(), src.transfer_address(), src.rtt_micros(),
            src.throughput_bytes_per_sec() * 8 / 1e6);
      }
    }
  }
  absl::Time t0 = absl::Now();
  std::vector<std::string> ids =
      FetchAll(api.get(), keys, v1::PRIORITY_INTERACTIVE, nullptr);
  int rc = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    v1::JobStatus s =
        WatchUntilEnd(api.get(), ids[i], absl::GetFlag(FLAGS_timeout));
    double secs = Secs(t0);
    std::cout << absl::StrFormat(
        "fetched %s state %s in %.3f s: %s%s\n", args[i + 1],
        v1::JobState_Name(s.state()), secs, s.reason(),
        s.last_error().empty() ? "" : " (last error: " + s.last_error() + ")");
    if (s.state() != v1::JOB_STATE_DONE) rc = 1;
  }
  std::cout.flush();
  return rc;
}

// ---- foreground mode
// ---------------------------------------------------------

std::vector<v1::SidecarKey> ReadUris(const std::string& file) {
  std::ifstream in(file);
  if (!in) Die("cannot read " + file);
  std::vector<v1::SidecarKey> keys;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    absl::StatusOr<SidecarKey> k = ParseSidecarUri(line);
    Check(k.status(), line);
    KeyToProto(*k, &keys.emplace_back());
  }
  return keys;
}

// The status of job `id` now (WatchJob's first message).
v1::JobStatus JobNow(v1::Transfer::Stub* api, const std::string& id) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  v1::WatchJobRequest req;
  req.set_job_id(id);
  auto reader = api->WatchJob(&ctx, req);
  v1::JobStatus s;
  if (!reader->Read(&s)) Die("WatchJob " + id + ": no status");
  ctx.TryCancel();
  reader->Finish();
  return s;
}

// Bytes received so far on --rx_interface (0 without one).
uint64_t RxBytes() {
  const std::string dev = absl::GetFlag(FLAGS_rx_interface);
  if (dev.empty()) return 0;
  std::ifstream in("/sys/class/net/" + dev + "/statistics/rx_bytes");
  uint64_t n = 0;
  if (!(in >> n)) Die("cannot read the received bytes of " + dev);
  return n;
}

// How many of `keys` are on the device (GetLocal, READY).
size_t CountLocal(v1::Availability::Stub* avail,
                  const std::vector<v1::SidecarKey>& keys) {
  size_t n = 0;
  for (size_t at = 0; at < keys.size(); at += 10000) {
    v1::GetLocalRequest req;
    for (size_t i = at; i < std::min(keys.size(), at + 10000); ++i) {
      *req.add_keys() = keys[i];
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(30));
    v1::GetLocalResponse resp;
    CheckRpc(avail->GetLocal(&ctx, req, &resp), "GetLocal");
    for (const auto& e : resp.entries()) n += e.ready() ? 1 : 0;
  }
  return n;
}

// Interactive fetches of the next `n` keys of `keys`, one at a time with a
// pause between them (as a person opens photos); seconds from Fetch until
// WatchJob says DONE, each.
std::vector<double> SampleInteractive(v1::Transfer::Stub* api,
                                      const std::vector<v1::SidecarKey>& keys,
                                      size_t* next, int n) {
  std::vector<double> secs;
  for (int i = 0; i < n; ++i) {
    if (*next >= keys.size()) Die("--interactive_file has too few keys");
    absl::Time t0 = absl::Now();
    std::vector<std::string> ids =
        FetchAll(api, {keys[(*next)++]}, v1::PRIORITY_INTERACTIVE, nullptr);
    v1::JobStatus s = WatchUntilEnd(api, ids[0], absl::Minutes(2));
    if (s.state() != v1::JOB_STATE_DONE) {
      Die(absl::StrCat("interactive fetch ended ", v1::JobState_Name(s.state()),
                       ": ", s.last_error()));
    }
    secs.push_back(Secs(t0));
    absl::SleepFor(absl::Milliseconds(300));
  }
  return secs;
}

std::string Millis(const std::vector<double>& secs) {
  return absl::StrJoin(secs, " ", [](std::string* out, double s) {
    absl::StrAppend(out, absl::StrFormat("%.0f", s * 1000));
  });
}

// Prints one loaded phase against the idle phase before it.
void ReportLoaded(const std::string& load, const std::vector<double>& idle,
                  const std::vector<double>& loaded,
                  const std::string& load_progress) {
  double mi = Median(idle), ml = Median(loaded);
  std::cout << absl::StrFormat(
      "== %s: interactive thumbnail median %.0f ms loaded vs %.0f ms idle = "
      "%.2fx (loaded ms: %s; idle ms: %s); the load meanwhile: %s\n",
      load, ml * 1000, mi * 1000, ml / mi, Millis(loaded), Millis(idle),
      load_progress);
}

int ForegroundMode() {
  const std::string target = absl::GetFlag(FLAGS_transfer);
  const std::string avail_target = absl::GetFlag(FLAGS_availability);
  if (target.empty() || avail_target.empty() ||
      absl::GetFlag(FLAGS_proxy).empty()) {
    std::cerr << "usage: transfer_bench --mode=foreground --transfer=HOST:PORT "
                 "--availability=HOST:PORT --interactive_file=FILE "
                 "--prefetch_file=FILE --proxy=URI\n";
    return 2;
  }
  auto api = v1::Transfer::NewStub(MakeLocalChannel(target));
  auto avail = v1::Availability::NewStub(MakeLocalChannel(avail_target));
  const std::vector<v1::SidecarKey> interactive =
      ReadUris(absl::GetFlag(FLAGS_interactive_file));
  const std::vector<v1::SidecarKey> prefetch =
      ReadUris(absl::GetFlag(FLAGS_prefetch_file));
  absl::StatusOr<SidecarKey> pk = ParseSidecarUri(absl::GetFlag(FLAGS_proxy));
  Check(pk.status(), "--proxy");
  v1::SidecarKey proxy;
  KeyToProto(*pk, &proxy);
  const int n = absl::GetFlag(FLAGS_samples);
  size_t next = 0;
  std::vector<v1::SidecarKey> all = interactive;
  all.insert(all.end(), prefetch.begin(), prefetch.end());
  all.push_back(proxy);
  WaitKnown(avail.get(), all);

  // A first fetch opens the connection and measures the link.
  SampleInteractive(api.get(), interactive, &next, 1);
  std::vector<double> idle1 =
      SampleInteractive(api.get(), interactive, &next, n);

  // Load 1: a large sidecar at normal priority.
  std::string proxy_job =
      FetchAll(api.get(), {proxy}, v1::PRIORITY_NORMAL, nullptr)[0];
  absl::Time since = absl::Now();
  while (JobNow(api.get(), proxy_job).bytes_verified() < (4u << 20)) {
    if (absl::Now() - since > absl::Seconds(60)) Die("the proxy did not start");
    absl::SleepFor(absl::Milliseconds(100));
  }
  uint64_t b0 = JobNow(api.get(), proxy_job).bytes_verified();
  const uint64_t proxy_rx0 = RxBytes();
  absl::Time t0 = absl::Now();
  std::vector<double> with_proxy =
      SampleInteractive(api.get(), interactive, &next, n);
  v1::JobStatus p1 = JobNow(api.get(), proxy_job);
  const uint64_t proxy_rx1 = RxBytes();
  const double proxy_secs = Secs(t0);
  if (p1.state() == v1::JOB_STATE_DONE) {
    Die("the proxy finished while sampling: use a larger one");
  }
  ReportLoaded(
      "normal-priority proxy", idle1, with_proxy,
      absl::StrFormat("the proxy moved %.1f Mbit/s%s",
                      (p1.bytes_verified() - b0) * 8 / 1e6 / proxy_secs,
                      absl::GetFlag(FLAGS_rx_interface).empty()
                          ? ""
                          : absl::StrFormat("; the link carried %.1f Mbit/s",
                                            (proxy_rx1 - proxy_rx0) * 8 / 1e6 /
                                                proxy_secs)));
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    v1::CancelRequest req;
    req.set_job_id(proxy_job);
    v1::CancelResponse resp;
    CheckRpc(api->Cancel(&ctx, req, &resp), "Cancel");
  }
  absl::SleepFor(absl::Seconds(1));  // the cancelled stream drains
  std::vector<double> idle2 =
      SampleInteractive(api.get(), interactive, &next, n);

  // Load 2: thousands of thumbnails prefetched.
  FetchAll(api.get(), prefetch, v1::PRIORITY_PREFETCH, nullptr);
  // Under way once 2 MB have arrived (batches commit at their end, so local
  // copies lag), or after 5 s without --rx_interface.
  since = absl::Now();
  const uint64_t rx_start = RxBytes();
  while (absl::GetFlag(FLAGS_rx_interface).empty()
             ? absl::Now() - since < absl::Seconds(5)
             : RxBytes() - rx_start < (2u << 20)) {
    if (absl::Now() - since > absl::Seconds(60)) Die("prefetch did not start");
    absl::SleepFor(absl::Milliseconds(100));
  }
  size_t c0 = CountLocal(avail.get(), prefetch);
  const uint64_t rx0 = RxBytes();
  t0 = absl::Now();
  std::vector<double> with_prefetch =
      SampleInteractive(api.get(), interactive, &next, n);
  size_t c1 = CountLocal(avail.get(), prefetch);
  const uint64_t rx1 = RxBytes();
  const double prefetch_secs = Secs(t0);
  if (c1 == prefetch.size()) {
    Die(absl::StrCat("prefetch finished while sampling (interactive ms: ",
                     Millis(with_prefetch), "): use more thumbnails"));
  }
  ReportLoaded(
      "prefetch of thumbnails", idle2, with_prefetch,
      absl::StrFormat(
          "%zu thumbnails prefetched and committed (%.0f/s)%s", c1 - c0,
          (c1 - c0) / prefetch_secs,
          absl::GetFlag(FLAGS_rx_interface).empty()
              ? ""
              : absl::StrFormat("; the link carried %.1f Mbit/s",
                                (rx1 - rx0) * 8 / 1e6 / prefetch_secs)));
  return 0;
}

// A new ext4 (with its journal, as mkfs makes it) on a loop device backed
// by a sparse file, mounted for the object's lifetime.
class LoopMount {
 public:
  LoopMount(const std::string& image, const std::string& mount_point,
            const std::string& log)
      : mount_point_(mount_point), log_(log) {
    std::filesystem::create_directories(mount_point);
    // Direct I/O between the loop device and its backing file: one page
    // cache (the filesystem's), as on a real disk.
    Sh(absl::StrCat("truncate -s 16G ", image, " && mkfs.ext4 -q -F ", image,
                    " && dev=$(losetup -f --show --direct-io=on ", image,
                    ") && mount $dev ", mount_point, " && chmod 755 ",
                    mount_point),
       log);
  }
  ~LoopMount() {
    // -d: the loop device goes with the filesystem.
    absl::StatusOr<int> rc = testing::RunCommand({"umount", "-d", mount_point_},
                                                 {}, log_, absl::Minutes(2));
    if (!rc.ok() || *rc != 0) {
      std::cerr << "umount " << mount_point_ << " failed; see " << log_ << "\n";
    }
  }
  LoopMount(const LoopMount&) = delete;
  LoopMount& operator=(const LoopMount&) = delete;

 private:
  const std::string mount_point_;
  const std::string log_;
};

int Run(const std::vector<char*>& args) {
  std::cout << std::unitbuf;  // progress lines appear as they happen
  if (absl::GetFlag(FLAGS_mode) == "fetch") return FetchMode(args);
  if (absl::GetFlag(FLAGS_mode) == "foreground") return ForegroundMode();
  std::string t = absl::GetFlag(FLAGS_data_dir) + "/transfer-bench-XXXXXX";
  if (mkdtemp(t.data()) == nullptr)
    Die("mkdtemp in " + absl::GetFlag(FLAGS_data_dir));
  const std::string work = t;
  ::chmod(work.c_str(), 0755);
  std::cout << "working directory " << work << "\n";
  // One fresh journaled ext4 holds every destination: the same conditions
  // for ours and each baseline, whatever the data_dir's filesystem has been
  // through. (Without a journal, ext4 skips inodes freed in the last 60 s
  // when it allocates new ones, so a copy right after deleting 10,000
  // files and their directories crawls; the order of the runs decided.)
  std::string dest = work;
  std::optional<LoopMount> dest_fs;
  if (absl::GetFlag(FLAGS_dest_fs) == "fresh") {
    dest = work + "/dest";
    dest_fs.emplace(work + "/dest.img", dest, work + "/dest-fs.log");
    std::cout << "destinations on a fresh ext4 at " << dest << "\n";
  } else if (absl::GetFlag(FLAGS_dest_fs) != "data_dir") {
    Die("--dest_fs: fresh or data_dir");
  }
  {
    testing::PgServerOptions pg_options;
    if (absl::GetFlag(FLAGS_pg_stats)) {
      pg_options.settings = {"shared_preload_libraries=pg_stat_statements",
                             "pg_stat_statements.track=all"};
    }
    PgServer pg(pg_options);
    Check(pg.Start(), "PostgreSQL");
    for (const std::string& b : absl::GetFlag(FLAGS_bench)) {
      if (b == "large") {
        BenchLarge(&pg, work, dest);
      } else if (b == "thumbs") {
        BenchThumbs(&pg, work, dest);
      } else {
        Die("unknown benchmark " + b);
      }
    }
  }
  dest_fs.reset();
  if (!absl::GetFlag(FLAGS_keep)) RemoveAll(work);
  return 0;
}

int Main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  try {
    return Run(args);
  } catch (const Fatal& f) {
    std::cerr << "transfer_bench: " << f.what << "\n";
    return 1;
  }
}

}  // namespace
}  // namespace sidecar::bench

int main(int argc, char** argv) { return sidecar::bench::Main(argc, argv); }
