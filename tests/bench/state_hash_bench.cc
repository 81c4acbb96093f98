// What the signed heads of gossip cost (services/availability/state_hash.h),
// beside baselines measured in the same run:
//   - the state digest of N entries from scratch (what a receiver computes
//     for a relayed snapshot, and an origin for its first head), beside one
//     SHA-256 pass over the same entries' raw 64 bytes each;
//   - the digest after a delta of 100 entries on a table of N (what an
//     origin computes for each new head, and a receiver for relayed deltas),
//     beside applying that delta alone;
//   - signing and checking a head (Ed25519).
#include <benchmark/benchmark.h>
#include <stdlib.h>

#include <filesystem>
#include <random>

#include "common/device_key.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/origin_table.h"
#include "services/availability/state_hash.h"

namespace sidecar::availability {
namespace {

Entries RandomEntries(size_t n, uint64_t seed, uint64_t first_seq) {
  std::mt19937_64 rng(seed);
  Entries out;
  out.reserve(n);
  Sha256Digest sha{};
  for (size_t i = 0; i < n; ++i) {
    Uuid u;
    for (auto& b : u.bytes) b = static_cast<uint8_t>(rng());
    sha[0] = static_cast<uint8_t>(i);
    out.push_back(Entry::Make(u, v1::SIDECAR_KIND_THUMB,
                              v1::SIDECAR_FORMAT_WEBP, 3, 1000 + i % 5000, sha,
                              first_seq + i, false));
  }
  OriginTable::SortAndDedupe(&out);
  return out;
}

void BM_StateHashFromScratch(benchmark::State& state) {
  const Entries entries = RandomEntries(state.range(0), 1, 1);
  for (auto _ : state) benchmark::DoNotOptimize(StateHashOf(entries));
  state.SetItemsProcessed(state.iterations() * entries.size());
}

void BM_BaselineSha256OfRawEntries(benchmark::State& state) {
  const Entries entries = RandomEntries(state.range(0), 1, 1);
  absl::string_view raw(reinterpret_cast<const char*>(entries.data()),
                        entries.size() * sizeof(Entry));
  for (auto _ : state) benchmark::DoNotOptimize(Sha256Of(raw));
  state.SetItemsProcessed(state.iterations() * entries.size());
}

// A table of N entries takes a delta of 100; `rehash` also recomputes the
// digest, as an origin does for its next head.
void DeltaThenMaybeHash(benchmark::State& state, bool rehash) {
  const size_t n = state.range(0);
  OriginTable table({Uuid::Random()}, 1);
  table.Replace(1, n, 0, RandomEntries(n, 1, 1));
  table.ComputeStateHash();
  uint64_t seq = n;
  uint64_t seed = 2;
  for (auto _ : state) {
    state.PauseTiming();
    Entries delta = RandomEntries(100, seed++, seq + 1);
    seq += delta.size();
    state.ResumeTiming();
    table.ApplyDelta(std::move(delta), seq, nullptr);
    if (rehash) benchmark::DoNotOptimize(table.ComputeStateHash());
  }
}
void BM_DeltaOf100AndNewDigest(benchmark::State& state) {
  DeltaThenMaybeHash(state, true);
}
void BM_BaselineDeltaOf100Alone(benchmark::State& state) {
  DeltaThenMaybeHash(state, false);
}

struct Keys {
  std::string dir;
  std::optional<DeviceKey> key;
  Keys() {
    char tmpl[] = "/tmp/state_hash_bench.XXXXXX";
    dir = mkdtemp(tmpl);
    absl::StatusOr<DeviceKey> k = DeviceKey::Create(dir, "bench");
    if (k.ok()) key.emplace(std::move(*k));
  }
  ~Keys() { std::filesystem::remove_all(dir); }
};

void BM_SignHead(benchmark::State& state) {
  Keys keys;
  if (!keys.key) return state.SkipWithError("no device key");
  SignedHead head{1, 2, Sha256Of("state"), ""};
  const std::string statement = HeadStatement(keys.key->device_id(), head);
  for (auto _ : state) benchmark::DoNotOptimize(keys.key->Sign(statement));
}

void BM_VerifyHead(benchmark::State& state) {
  Keys keys;
  if (!keys.key) return state.SkipWithError("no device key");
  SignedHead head{1, 2, Sha256Of("state"), ""};
  const std::string statement = HeadStatement(keys.key->device_id(), head);
  const std::string sig = keys.key->Sign(statement);
  for (auto _ : state) {
    bool ok = VerifySignature(keys.key->certificate(), statement, sig);
    if (!ok) return state.SkipWithError("signature did not verify");
  }
}

BENCHMARK(BM_StateHashFromScratch)
    ->Arg(16)
    ->Arg(1 << 12)
    ->Arg(1'000'000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_BaselineSha256OfRawEntries)
    ->Arg(1 << 12)
    ->Arg(1'000'000)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DeltaOf100AndNewDigest)
    ->Arg(1 << 12)
    ->Arg(1'000'000)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BaselineDeltaOf100Alone)
    ->Arg(1 << 12)
    ->Arg(1'000'000)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SignHead)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_VerifyHead)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace sidecar::availability

BENCHMARK_MAIN();
