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
// Uses the SSE4.2 crc32 instruction when the CPU has it.
uint32_t Crc32cExtend(uint32_t crc, absl::string_view data);

inline uint32_t Crc32c(absl::string_view data) { return Crc32cExtend(0, data); }

namespace internal {
// The portable (table) implementation, for tests.
uint32_t Crc32cExtendPortable(uint32_t crc, absl::string_view data);
}  // namespace internal

}  // namespace sidecar

#endif  // SIDECAR_COMMON_CRC32C_H_
