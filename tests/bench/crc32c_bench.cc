// CRC-32C (common/crc32c.h) on the buffer sizes the transfer service
// checksums: a 4 KiB block, and chunks of 64 KiB (kMinChunkBytes), 256 KiB
// (kDefaultChunkBytes) and 1 MiB (kMaxChunkBytes). Side by side in one run:
//   - Crc32cExtend, what the services call;
//   - Intel ISA-L's crc32_iscsi (libisal), called directly;
//   - one stream of the SSE4.2 crc32 instruction, 8 bytes at a time (what
//     Crc32cExtend was before it called ISA-L), as a baseline;
//   - the portable slicing-by-8 table version, as a reference.
// Before timing, main() checks every implementation against the RFC 3720
// check values and against each other on random data; a mismatch exits 1
// (so the ctest smoke run also checks them).
#include <benchmark/benchmark.h>
#include <isa-l/crc.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

#include "absl/strings/string_view.h"
#include "common/crc32c.h"
#include "tests/support/test_data.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace sidecar {
namespace {

using ::sidecar::testing::RandomBytes;

// ISA-L takes and returns the raw CRC register (no inversion on the way in
// or out): the standard CRC-32C continued from `crc` is ~f(~crc). Its length
// is an int, so this is for buffers below 2 GiB only.
uint32_t IsalExtend(uint32_t crc, absl::string_view data) {
  return ~crc32_iscsi(
      reinterpret_cast<unsigned char*>(const_cast<char*>(data.data())),
      static_cast<int>(data.size()), ~crc);
}

#if defined(__x86_64__)
// One dependent chain of crc32 instructions: bound by its 3-cycle latency.
__attribute__((target("sse4.2"))) uint32_t Sse42OneStreamExtend(
    uint32_t crc, absl::string_view data) {
  const char* p = data.data();
  size_t n = data.size();
  uint64_t c = ~crc;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c = _mm_crc32_u64(c, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  while (n > 0) {
    c32 = _mm_crc32_u8(c32, static_cast<uint8_t>(*p++));
    --n;
  }
  return ~c32;
}

bool HasSse42() { return __builtin_cpu_supports("sse4.2"); }
#else
uint32_t Sse42OneStreamExtend(uint32_t crc, absl::string_view data) {
  return internal::Crc32cExtendPortable(crc, data);
}
bool HasSse42() { return false; }
#endif

using ExtendFn = uint32_t (*)(uint32_t, absl::string_view);

struct Impl {
  const char* name;
  ExtendFn fn;
};

const Impl kImpls[] = {
    {"Crc32cExtend", &Crc32cExtend},
    {"IsalCrc32Iscsi", &IsalExtend},
    {"Sse42OneStream", &Sse42OneStreamExtend},
    {"Portable", &internal::Crc32cExtendPortable},
};

// Every implementation against RFC 3720 (appendix B.4) and "123456789",
// and against the portable one on random data, whole and split.
bool Verify() {
  std::string ascending(32, '\0');
  for (int i = 0; i < 32; ++i) ascending[i] = static_cast<char>(i);
  const struct {
    std::string data;
    uint32_t crc;
  } known[] = {
      {"", 0},
      {"123456789", 0xe3069283u},
      {std::string(32, '\0'), 0x8a9136aau},
      {std::string(32, '\xff'), 0x62a8ab43u},
      {ascending, 0x46dd794eu},
  };
  const std::string random = RandomBytes((1 << 20) + 13, 7);
  bool ok = true;
  for (const Impl& impl : kImpls) {
    if (impl.fn == &Sse42OneStreamExtend && !HasSse42()) continue;
    for (const auto& k : known) {
      uint32_t got = impl.fn(0, k.data);
      if (got != k.crc) {
        std::fprintf(stderr, "%s: CRC-32C of %zu bytes is %08x, not %08x\n",
                     impl.name, k.data.size(), got, k.crc);
        ok = false;
      }
    }
    for (size_t len : {1, 7, 4096, 65536 + 3, (1 << 20) + 13}) {
      absl::string_view v(random.data(), len);
      uint32_t want = internal::Crc32cExtendPortable(0, v);
      for (size_t cut : {size_t{0}, size_t{1}, len / 3, len}) {
        uint32_t got = impl.fn(impl.fn(0, v.substr(0, cut)), v.substr(cut));
        if (got != want) {
          std::fprintf(stderr,
                       "%s: %zu random bytes cut at %zu give %08x, not %08x\n",
                       impl.name, len, cut, got, want);
          ok = false;
        }
      }
    }
  }
  return ok;
}

void Run(benchmark::State& state, ExtendFn fn) {
  const std::string data = RandomBytes(static_cast<size_t>(state.range(0)), 1);
  uint32_t crc = 0;
  for (auto _ : state) {
    crc = fn(crc, data);
    benchmark::DoNotOptimize(crc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          state.range(0));
}

void Sizes(benchmark::internal::Benchmark* b) {
  for (int64_t n : {4 << 10, 64 << 10, 256 << 10, 1 << 20}) b->Arg(n);
}

void BM_Crc32cExtend(benchmark::State& state) { Run(state, &Crc32cExtend); }
BENCHMARK(BM_Crc32cExtend)->Apply(Sizes);

void BM_IsalCrc32Iscsi(benchmark::State& state) { Run(state, &IsalExtend); }
BENCHMARK(BM_IsalCrc32Iscsi)->Apply(Sizes);

void BM_Baseline_Sse42OneStream(benchmark::State& state) {
  if (!HasSse42()) {
    state.SkipWithError("no SSE4.2 on this CPU");
    return;
  }
  Run(state, &Sse42OneStreamExtend);
}
BENCHMARK(BM_Baseline_Sse42OneStream)->Apply(Sizes);

void BM_Baseline_Portable(benchmark::State& state) {
  Run(state, &internal::Crc32cExtendPortable);
}
BENCHMARK(BM_Baseline_Portable)->Apply(Sizes);

}  // namespace
}  // namespace sidecar

int main(int argc, char** argv) {
  if (!sidecar::Verify()) return 1;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
