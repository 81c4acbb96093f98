// Store quota costs, each beside a baseline in the same run:
//  - eviction throughput: sidecars evicted per second by the Evictor
//    (journal, ListEvictable, Availability.Remove, unlink), against a real
//    availability service and PostgreSQL, beside the same files unlinked
//    alone and withdrawn with Remove + unlink without the journal; plus the
//    cost of the last-copy check (WhoHas) per batch;
//  - the quota check per fetch (Evictor::Admit below the quota, and the
//    release of its Admission when the fetch ends) beside the free-space
//    check every fetch already makes (StoreWriter::CheckSpace, statvfs).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/transport.h"
#include "services/transfer/availability_client.h"
#include "services/transfer/evictor.h"
#include "services/transfer/store_writer.h"
#include "tests/support/availability_process.h"
#include "tests/support/pg_server.h"

ABSL_FLAG(int, n, 20000, "sidecars per eviction run");
ABSL_FLAG(int, size, 16384, "bytes per sidecar");
ABSL_FLAG(int, checks, 2000000, "quota checks timed");
ABSL_FLAG(std::string, binary, AVAILABILITY_BIN, "sidecar-availability");

namespace sidecar::bench {
namespace {

using testing::AvailabilityProcess;
using testing::PgServer;
using transfer::AvailabilityClient;
using transfer::Evictor;

void Check(const absl::Status& s, const char* what) {
  if (!s.ok()) {
    std::cerr << what << ": " << s << "\n";
    std::exit(1);
  }
}

// Writes n files and registers them READY and fetched. Returns the keys.
std::vector<SidecarKey> Seed(AvailabilityProcess* a, AvailabilityClient* c,
                             int n, int size) {
  std::vector<SidecarKey> keys;
  std::vector<AvailabilityClient::ReadyItem> items;
  const std::string bytes(size, 'x');
  Sha256 hasher;
  hasher.Update(bytes);
  const Sha256Digest sha = hasher.Finish();
  for (int i = 0; i < n; ++i) {
    SidecarKey k;
    k.content = Uuid::Random();
    k.kind = v1::SIDECAR_KIND_THUMB;
    k.variant = "grid@2x";
    k.format = v1::SIDECAR_FORMAT_WEBP;
    std::string path = absl::StrCat(a->sidecar_root(), "/", RelativePath(k));
    std::filesystem::create_directories(
        std::filesystem::path(path).parent_path());
    std::ofstream(path) << bytes;
    keys.push_back(k);
    items.push_back({k, static_cast<uint64_t>(size), sha, "fetched from x"});
  }
  Check(c->RegisterReadyMany(items), "register");
  return keys;
}

double PerSec(int n, absl::Duration d) { return n / absl::ToDoubleSeconds(d); }

void Eviction(AvailabilityProcess* a, AvailabilityClient* c) {
  const int n = absl::GetFlag(FLAGS_n);
  const int size = absl::GetFlag(FLAGS_size);
  std::cout << absl::StrFormat("== eviction of %d sidecars of %d B ==\n", n,
                               size);

  // Baseline 1: unlink alone.
  std::vector<SidecarKey> keys = Seed(a, c, n, size);
  absl::Time t = absl::Now();
  for (const SidecarKey& k : keys) {
    ::unlink(absl::StrCat(a->sidecar_root(), "/", RelativePath(k)).c_str());
  }
  absl::Duration unlink_only = absl::Now() - t;
  for (size_t i = 0; i < keys.size(); i += 1000) {
    size_t m = std::min<size_t>(1000, keys.size() - i);
    Check(c->Remove(absl::MakeSpan(keys).subspan(i, m)).status(), "remove");
  }

  // Baseline 2: withdraw (Remove, 1,000 a call) + unlink, no journal, no
  // candidate listing.
  keys = Seed(a, c, n, size);
  t = absl::Now();
  for (size_t i = 0; i < keys.size(); i += 1000) {
    size_t m = std::min<size_t>(1000, keys.size() - i);
    Check(c->Remove(absl::MakeSpan(keys).subspan(i, m)).status(), "remove");
    for (size_t j = i; j < i + m; ++j) {
      ::unlink(
          absl::StrCat(a->sidecar_root(), "/", RelativePath(keys[j])).c_str());
    }
  }
  absl::Duration remove_unlink = absl::Now() - t;

  // The Evictor: everything must go (quota 1 byte; no other device, so
  // the last-copy check is off and timed on its own below).
  keys = Seed(a, c, n, size);
  std::unique_ptr<Evictor::Backend> backend = Evictor::ForAvailability(c);
  absl::Duration whohas;
  {
    absl::StatusOr<std::vector<transfer::EvictionCandidate>> cands =
        backend->ListEvictable(v1::SIDECAR_KIND_UNSPECIFIED, 1000);
    Check(cands.status(), "list");
    const int kRounds = 5;
    t = absl::Now();
    for (int i = 0; i < kRounds; ++i) {
      Check(backend->OnlineOtherHolders(*cands).status(), "whohas");
    }
    whohas = (absl::Now() - t) / kRounds;
    std::cout << absl::StrFormat(
        "last-copy check (WhoHas of %d candidates): %s per batch, %.1f us "
        "per sidecar\n",
        cands->size(), absl::FormatDuration(whohas),
        absl::ToDoubleMicroseconds(whohas) /
            std::max<size_t>(1, cands->size()));
  }
  Evictor evictor(Evictor::Options{.root = a->sidecar_root(),
                                   .quota = {.total = 1},
                                   .evict_last_copies = true,
                                   .max_rounds = 1000},
                  backend.get());
  Check(evictor.Refresh(), "refresh");
  t = absl::Now();
  absl::StatusOr<Evictor::Result> r = evictor.EnforceQuota();
  absl::Duration evict = absl::Now() - t;
  Check(r.status(), "evict");
  if (r->evicted != static_cast<uint64_t>(n)) {
    std::cerr << "evicted " << r->evicted << " of " << n << "\n";
    std::exit(1);
  }
  for (const SidecarKey& k : keys) {
    if (std::filesystem::exists(
            absl::StrCat(a->sidecar_root(), "/", RelativePath(k)))) {
      std::cerr << "a file is left\n";
      std::exit(1);
    }
  }
  double with_check = n / (absl::ToDoubleSeconds(evict) +
                           absl::ToDoubleSeconds(whohas) * (n / 1000.0));
  std::cout << absl::StrFormat(
      "unlink only (baseline):          %9.0f sidecars/s\n"
      "Remove + unlink (baseline):      %9.0f sidecars/s\n"
      "Evictor (journal+list+Remove+unlink): %9.0f sidecars/s  (%s)\n"
      "Evictor with the last-copy check:     %9.0f sidecars/s (estimated: "
      "+1 WhoHas per 1,000)\n",
      PerSec(n, unlink_only), PerSec(n, remove_unlink), PerSec(n, evict),
      absl::FormatDuration(evict), with_check);
}

void QuotaCheck(const std::string& root) {
  const int m = absl::GetFlag(FLAGS_checks);
  std::cout << absl::StrFormat("\n== quota check per fetch (%d calls) ==\n", m);
  absl::StatusOr<std::unique_ptr<transfer::StoreWriter>> store =
      transfer::StoreWriter::Open(root);
  Check(store.status(), "store");
  // A backend that is never called: the usage is set once.
  struct Fixed : Evictor::Backend {
    absl::StatusOr<std::vector<v1::KindUsage>> LocalUsage() override {
      v1::KindUsage u;
      u.set_kind(v1::SIDECAR_KIND_THUMB);
      u.set_own_bytes(1 << 30);
      return std::vector<v1::KindUsage>{u};
    }
    absl::StatusOr<std::vector<transfer::EvictionCandidate>> ListEvictable(
        Kind, uint32_t) override {
      return std::vector<transfer::EvictionCandidate>{};
    }
    absl::StatusOr<std::vector<int>> OnlineOtherHolders(
        absl::Span<const transfer::EvictionCandidate>) override {
      return std::vector<int>{};
    }
    absl::StatusOr<uint32_t> Remove(absl::Span<const SidecarKey>) override {
      return 0u;
    }
    absl::StatusOr<std::vector<bool>> ReadyLocally(
        absl::Span<const SidecarKey>) override {
      return std::vector<bool>{};
    }
  } fixed;
  Evictor evictor(Evictor::Options{.root = root,
                                   .quota = *transfer::QuotaConfig::Parse(
                                       1ull << 50, "thumb:1000T,proxy:1000T")},
                  &fixed);
  Check(evictor.Refresh(), "refresh");
  absl::Time t = absl::Now();
  for (int i = 0; i < m; ++i) {
    Check((*store)->CheckSpace(1, 0), "space");
  }
  absl::Duration space = (absl::Now() - t) / m;
  t = absl::Now();
  for (int i = 0; i < m; ++i) {
    // The Admission is released at once, as a fetch's is when it ends.
    Check(evictor.Admit(v1::PRIORITY_PREFETCH, v1::SIDECAR_KIND_THUMB, 1)
              .status(),
          "admit");
  }
  absl::Duration admit = (absl::Now() - t) / m;
  std::cout << absl::StrFormat(
      "free-space check, statvfs (baseline): %7.1f ns per fetch\n"
      "quota check (Evictor::Admit+release): %7.1f ns per fetch (%.2fx)\n",
      absl::ToDoubleNanoseconds(space), absl::ToDoubleNanoseconds(admit),
      absl::ToDoubleNanoseconds(admit) / absl::ToDoubleNanoseconds(space));
}

}  // namespace
}  // namespace sidecar::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  char tmpl[] = "/tmp/sidecar-evict-bench-XXXXXX";
  std::string dir = mkdtemp(tmpl);
  sidecar::testing::PgServerOptions opts;
  sidecar::testing::PgServer pg(opts);
  sidecar::bench::Check(pg.Start(), "start PostgreSQL");
  auto a = sidecar::testing::AvailabilityProcess::Create(
      absl::GetFlag(FLAGS_binary), &pg, dir, {"evict", {}, {}});
  sidecar::bench::Check(a.status(), "create");
  sidecar::bench::Check((*a)->Start(), "start");
  sidecar::transfer::AvailabilityClient client((*a)->local_address(),
                                               absl::Seconds(30));
  sidecar::bench::Eviction(a->get(), &client);
  sidecar::bench::QuotaCheck((*a)->sidecar_root());
  std::filesystem::remove_all(dir);
  return 0;
}
