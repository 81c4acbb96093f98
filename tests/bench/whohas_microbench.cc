// In-process benchmark of the WhoHas handler over a cache of 1M remote
// entries, beside the baseline of looking the same keys up in an
// absl::flat_hash_map of all keys (what a naive cache would do, at several
// times the memory).
#include <benchmark/benchmark.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "services/availability/availability_service.h"
#include "tests/support/test_data.h"

namespace sidecar::availability {
namespace {

constexpr int kEntries = 1'000'000;
constexpr int kKeys = 10'000;

SidecarKey KeyFor(uint64_t i) { return testing::BenchKey(i); }

struct World {
  WatchHub hub;
  PeerCache cache{OriginInfo{Uuid::Random()}, &hub};
  // No library: the handler under test never asks for one.
  PeerManager peers{{}, &cache, &hub, v1::Hello(), nullptr, nullptr};
  AvailabilityService service{{nullptr,
                               nullptr,
                               &cache,
                               &peers,
                               &hub,
                               "/nonexistent",
                               nullptr,
                               nullptr,
                               {}}};
  v1::WhoHasRequest request;
  std::vector<SidecarKey> probe;

  World() {
    std::vector<Entry> entries;
    entries.reserve(kEntries);
    for (int i = 0; i < kEntries; ++i) {
      SidecarKey k = KeyFor(i);
      entries.push_back(Entry::Make(k.content, k.kind, k.format,
                                    ToEntryKey(k)->variant, 45000,
                                    Sha256Of("b"), i + 1, false));
    }
    Uuid remote = Uuid::Random();
    (void)cache.ReplaceRemote({remote, "", "", "desktop"}, InfoSource::kOrigin,
                              1, kEntries, 0, std::move(entries));
    for (int i = 0; i < kKeys; ++i) {
      SidecarKey k =
          i % 2 ? KeyFor((i * 7919ull) % kEntries) : KeyFor(kEntries + i);
      KeyToProto(k, request.add_keys());
      probe.push_back(k);
    }
  }
};

World& TheWorld() {
  static World* w = new World();
  return *w;
}

void BM_WhoHas10kKeys(benchmark::State& state) {
  World& w = TheWorld();
  size_t held = 0;
  for (auto _ : state) {
    grpc::ServerContext ctx;
    v1::WhoHasResponse resp;
    grpc::Status s = w.service.WhoHas(&ctx, &w.request, &resp);
    if (!s.ok()) state.SkipWithError(s.error_message().c_str());
    held = 0;
    for (const auto& r : resp.results()) held += r.holders_size();
    benchmark::DoNotOptimize(resp);
  }
  state.counters["held"] = static_cast<double>(held);
}
BENCHMARK(BM_WhoHas10kKeys)->Unit(benchmark::kMillisecond);

void BM_Baseline_FlatHashMap10kKeys(benchmark::State& state) {
  World& w = TheWorld();
  static auto* map = [] {
    auto* m = new absl::flat_hash_map<SidecarKey, uint64_t>();
    m->reserve(kEntries);
    for (int i = 0; i < kEntries; ++i) m->emplace(KeyFor(i), 45000);
    return m;
  }();
  size_t held = 0;
  for (auto _ : state) {
    held = 0;
    for (const SidecarKey& k : w.probe) held += map->contains(k);
    benchmark::DoNotOptimize(held);
  }
  state.counters["held"] = static_cast<double>(held);
}
BENCHMARK(BM_Baseline_FlatHashMap10kKeys)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sidecar::availability

BENCHMARK_MAIN();
