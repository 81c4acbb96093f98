// Memory of the peer cache when several devices hold the same sidecars, as
// most keys of a library are held by several devices (issue 11: "one entry
// per key"). For each case KEYSxORIGINS, the cache of a device is filled with
// ORIGINS remote origins that each advertise the same KEYS sidecars (same
// checksums, as copies are), and the heap bytes it takes are read from the
// allocator (mallinfo2: small and mmapped blocks) before and after.
//
// Printed beside two baselines: the raw data of one key (content id, kind,
// format, variant, size, checksum: 60 bytes) and the same keys held by a
// single origin, which is what perfect sharing would cost plus the holders.
//
// A third baseline is the design before it: an array of 64-byte entries
// per origin (EntrySets), which the same origins fill in this process.
//
// Then a delta of 100 changes to one origin: PeerCache::ApplyRemoteDelta
// (merge, and the shared table rebuilt), beside OriginTable::ApplyDelta on
// an array of its own, which is all a delta cost before; medians of 5.
//
//   cache_memory_bench --cases=1000000x1,1000000x5,6000000x2
#include <malloc.h>

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "services/availability/entry_set.h"
#include "services/availability/origin_table.h"
#include "services/availability/peer_cache.h"
#include "tests/support/bench_entries.h"

ABSL_FLAG(std::string, cases, "1000000x1,1000000x5,6000000x2",
          "comma-separated KEYSxORIGINS: sidecars, and devices holding each");

namespace sidecar::availability {
namespace {

// Bytes the allocator has handed out and not taken back.
size_t HeapInUse() {
  struct mallinfo2 m = mallinfo2();
  return m.uordblks + m.hblkhd;
}

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::cerr << s << "\n";
    std::exit(1);
  }
}

// Heap bytes of a cache in which `origins` remote devices advertise
// `entries` each.
size_t CacheBytes(const Entries& entries, int origins) {
  const size_t before = HeapInUse();
  size_t used = 0;
  {
    PeerCache cache(OriginInfo{Uuid::Random()}, nullptr);
    for (int o = 0; o < origins; ++o) {
      absl::Status s =
          cache.ReplaceRemote(OriginInfo{Uuid::Random()}, InfoSource::kOrigin,
                              1, entries.size(), 0, Entries(entries));
      if (!s.ok()) {
        std::cerr << "ReplaceRemote: " << s << "\n";
        std::exit(1);
      }
    }
    if (cache.TotalEntries() != entries.size() * origins) {
      std::cerr << "the cache holds " << cache.TotalEntries()
                << " entries, not " << entries.size() * origins << "\n";
      std::exit(1);
    }
    used = HeapInUse() - before;
  }
  return used;
}

// Heap bytes of `origins` arrays of `entries`: the cache before the
// shared table.
size_t ArrayBytes(const Entries& entries, int origins) {
  const size_t before = HeapInUse();
  std::vector<std::shared_ptr<const EntrySet>> arrays;
  for (int o = 0; o < origins; ++o) {
    arrays.push_back(std::make_shared<const EntrySet>(Entries(entries)));
  }
  return HeapInUse() - before;
}

// 100 changes to the entries of `entries` (new sizes and checksums), at
// seqs after theirs.
Entries Changes(const Entries& entries, int round) {
  Entries out;
  const size_t step = std::max<size_t>(1, entries.size() / 100);
  for (size_t i = 0; i < entries.size() && out.size() < 100; i += step) {
    Entry e = entries[i];
    e.sha256 = Sha256Of(absl::StrCat("changed ", i, " ", round));
    e.seq_bits = (e.seq_bits & ~kMaxSeq) |
                 (entries.size() + 1 + round * 100 + out.size());
    out.push_back(e);
  }
  return out;
}

absl::Duration Median(std::vector<absl::Duration> d) {
  std::sort(d.begin(), d.end());
  return d[d.size() / 2];
}

// A delta of 100 changes to one of `origins` remote origins holding
// `entries`: through the cache, and (baseline) on an array of its own.
std::pair<absl::Duration, absl::Duration> DeltaTimes(const Entries& entries,
                                                     int origins) {
  PeerCache cache(OriginInfo{Uuid::Random()}, nullptr);
  const OriginInfo changing{Uuid::Random()};
  for (int o = 0; o < origins; ++o) {
    const OriginInfo info = o == 0 ? changing : OriginInfo{Uuid::Random()};
    Check(cache.ReplaceRemote(info, InfoSource::kOrigin, 1, entries.size(), 0,
                              Entries(entries)));
  }
  OriginTable array(changing, 1);
  array.Replace(1, entries.size(), 0, Entries(entries));
  std::vector<absl::Duration> shared, alone;
  for (int round = 0; round < 5; ++round) {
    Entries batch = Changes(entries, round);
    const uint64_t up_to = batch.back().seq();
    absl::Time t = absl::Now();
    Check(cache.ApplyRemoteDelta(changing, InfoSource::kOrigin, 1, up_to,
                                 Entries(batch)));
    shared.push_back(absl::Now() - t);
    t = absl::Now();
    array.ApplyDelta(std::move(batch), up_to, nullptr);
    alone.push_back(absl::Now() - t);
  }
  return {Median(shared), Median(alone)};
}

struct Case {
  uint64_t keys = 0;
  int origins = 0;
};

std::vector<Case> ParseCases(const std::string& flag) {
  std::vector<Case> out;
  for (absl::string_view c : absl::StrSplit(flag, ',', absl::SkipEmpty())) {
    std::vector<absl::string_view> parts = absl::StrSplit(c, 'x');
    Case k;
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &k.keys) ||
        !absl::SimpleAtoi(parts[1], &k.origins) || k.keys == 0 ||
        k.origins < 1) {
      std::cerr << "--cases: \"" << c << "\" is not KEYSxORIGINS\n";
      std::exit(2);
    }
    out.push_back(k);
  }
  return out;
}

int Run() {
  constexpr double kRawKeyBytes = 16 + 4 + 8 + 32;
  // What the first cache allocates once per process is not per key.
  CacheBytes(testing::BenchEntries(1000), 1);
  for (const Case& c : ParseCases(absl::GetFlag(FLAGS_cases))) {
    const absl::Time start = absl::Now();
    const Entries entries = testing::BenchEntries(c.keys);
    const double one = static_cast<double>(CacheBytes(entries, 1)) / c.keys;
    const double all =
        c.origins == 1
            ? one
            : static_cast<double>(CacheBytes(entries, c.origins)) / c.keys;
    std::cout << absl::StrFormat(
        "%d keys held by %d origins: %.1f bytes per key (%.1f per holder); "
        "baselines: one origin %.1f bytes per key, raw key data %.0f; "
        "per key/one origin = %.2f, per key/raw = %.2f (%s)\n",
        c.keys, c.origins, all, all / c.origins, one, kRawKeyBytes, all / one,
        all / kRawKeyBytes, absl::FormatDuration(absl::Now() - start));
    const double arrays =
        static_cast<double>(ArrayBytes(entries, c.origins)) / c.keys;
    std::cout << absl::StrFormat(
        "  per-origin arrays (before): %.1f bytes per key; shared/arrays = "
        "%.2f\n",
        arrays, all / arrays);
    auto [shared, alone] = DeltaTimes(entries, c.origins);
    std::cout << absl::StrFormat(
        "  a delta of 100 changes to one origin: %s through the cache, %s on "
        "an array of its own (before); ratio %.2f\n",
        absl::FormatDuration(shared), absl::FormatDuration(alone),
        absl::FDivDuration(shared, alone));
  }
  return 0;
}

}  // namespace
}  // namespace sidecar::availability

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return sidecar::availability::Run();
}
