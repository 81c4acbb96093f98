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
// The same origins are also put into a HolderTable (each distinct record
// stored once), with the time its last WithOrigin took: what replacing one
// origin's entries costs there.
//
//   cache_memory_bench --cases=1000000x1,1000000x5,6000000x2
#include <malloc.h>

#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "services/availability/entry_set.h"
#include "services/availability/holder_table.h"
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

struct TableFigures {
  size_t bytes = 0;
  absl::Duration last_change;
};

// Heap bytes of a HolderTable in which `origins` slots hold `entries`.
TableFigures TableBytes(const Entries& entries, int origins) {
  const size_t before = HeapInUse();
  TableFigures f;
  {
    HolderTable table;
    for (int o = 0; o < origins; ++o) {
      const absl::Time start = absl::Now();
      table = table.WithOrigin(o, entries);
      f.last_change = absl::Now() - start;
    }
    if (table.rows() != entries.size() ||
        table.count(origins - 1) != entries.size()) {
      std::cerr << "the table holds " << table.rows() << " rows\n";
      std::exit(1);
    }
    f.bytes = HeapInUse() - before;
  }
  return f;
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
    const TableFigures table = TableBytes(entries, c.origins);
    const double shared = static_cast<double>(table.bytes) / c.keys;
    std::cout << absl::StrFormat(
        "  holder table: %.1f bytes per key; /cache = %.2f, /raw = %.2f; "
        "replacing one origin took %s\n",
        shared, shared / all, shared / kRawKeyBytes,
        absl::FormatDuration(table.last_change));
  }
  return 0;
}

}  // namespace
}  // namespace sidecar::availability

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return sidecar::availability::Run();
}
