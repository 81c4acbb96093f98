// CRC-32C (Castagnoli), the checksum of each chunk of a TransferPeer.Read
// stream. It catches corruption on the way (and lets a resumed fetch trust
// the chunks it kept) at a few percent of the cost of SHA-256, which is
// kept for the whole file: the receiver hashes every byte once with
// SHA-256 instead of twice, and the sender not at all.
//
//   uint32_t c = Crc32c(data);
//   uint32_t d = Crc32cExtend(Crc32c(a), b);  // == Crc32c(a + b)
#ifndef SIDECAR_COMMON_CRC32C_H_
#define SIDECAR_COMMON_CRC32C_H_

#include <cstdint>

#include "absl/strings/string_view.h"

namespace sidecar {

// CRC-32C of `data` continued from `crc`, the CRC-32C of what came before.
// Computed by Intel ISA-L (libisal's crc32_iscsi), which picks the fastest
// code for the CPU at run time (interleaved crc32 instructions, PCLMULQDQ or
// VPCLMULQDQ folding). tests/bench/crc32c_bench.cc, 2026-12-07, one core of
// a 2.6 GHz AMD EPYC (AVX-512), CPU time per buffer:
//
//   bytes   ISA-L            one SSE4.2 stream  portable   SSE4.2 / ISA-L
//   4 KiB   85 ns  45 GiB/s  425 ns  9.0 GiB/s  1.9 us      5.0x
//   64 KiB  1.2 us 52 GiB/s  6.8 us  9.0 GiB/s  30 us       5.7x
//   256 KiB 5.4 us 46 GiB/s  27 us   9.0 GiB/s  119 us      5.0x
//   1 MiB   19 us  51 GiB/s  109 us  9.0 GiB/s  485 us      5.7x
//
// (one SSE4.2 stream, 8 bytes per crc32 instruction, was the code here
// before; 256 KiB is the transfer service's default chunk.)
uint32_t Crc32cExtend(uint32_t crc, absl::string_view data);

inline uint32_t Crc32c(absl::string_view data) { return Crc32cExtend(0, data); }

namespace internal {
// The portable (slicing-by-8 table) implementation: the independent
// reference that tests and the benchmark check ISA-L's results against.
uint32_t Crc32cExtendPortable(uint32_t crc, absl::string_view data);
}  // namespace internal

}  // namespace sidecar

#endif  // SIDECAR_COMMON_CRC32C_H_
