// The benchmark library of test_data.h as a device advertises it: cache
// entries for BenchKey(0..n-1), shared by the availability benchmarks that
// fill a cache in process.
#ifndef SIDECAR_TESTS_SUPPORT_BENCH_ENTRIES_H_
#define SIDECAR_TESTS_SUPPORT_BENCH_ENTRIES_H_

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "services/availability/entry.h"
#include "services/availability/entry_set.h"
#include "services/availability/origin_table.h"
#include "tests/support/test_data.h"

namespace sidecar::testing {

// Entries for BenchKey(0..n-1) in key order, one per key: sizes of 40,000
// to 48,999 bytes, a checksum of each key's own, seq i + 1 for key i.
inline availability::Entries BenchEntries(uint64_t n) {
  availability::Entries entries;
  availability::ReserveEntries(&entries, n);
  for (uint64_t i = 0; i < n; ++i) {
    SidecarKey k = BenchKey(i);
    entries.push_back(availability::Entry::Make(
        k.content, k.kind, k.format, availability::ToEntryKey(k)->variant,
        40000 + i % 9000, Sha256Of(absl::StrCat(i)), i + 1, false));
  }
  availability::OriginTable::SortAndDedupe(&entries);
  return entries;
}

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_BENCH_ENTRIES_H_
