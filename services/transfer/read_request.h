// The checks the TransferPeer service (peer_server.h) makes of a Read or
// BatchRead request before it touches the index or the disk. Pure functions
// of the request (and, for a Read's byte range, of the registered size), so
// that tests and fuzz targets (tests/fuzz) exercise exactly what the server
// runs on bytes from the network.
#ifndef SIDECAR_SERVICES_TRANSFER_READ_REQUEST_H_
#define SIDECAR_SERVICES_TRANSFER_READ_REQUEST_H_

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/request_limits.h"
#include "common/sidecar_key.h"
#include "sidecar/v1/transfer.pb.h"

namespace sidecar::transfer {

inline constexpr uint32_t kMinChunkBytes = 64 << 10;
inline constexpr uint32_t kMaxChunkBytes = 1 << 20;
// Chosen by tests/bench/chunk_size_bench.cc (loopback, SHA-NI).
inline constexpr uint32_t kDefaultChunkBytes = 256 << 10;

// The chunk size a Read with `requested` chunk_bytes gets: `requested`, or
// `default_bytes` for 0 (kDefaultChunkBytes if that is 0 too), clamped to
// kMinChunkBytes..kMaxChunkBytes.
uint32_t EffectiveChunkBytes(uint32_t requested, uint32_t default_bytes);

// A Read request that passed CheckReadRequest.
struct ReadCall {
  SidecarKey key;
  uint32_t chunk_bytes = 0;  // EffectiveChunkBytes of the request's
};

// Validates the key of a Read (INVALID_ARGUMENT "bad key: ..." otherwise)
// and works out its chunk size. The byte range can only be checked once
// the size is known (ReadRange).
absl::StatusOr<ReadCall> CheckReadRequest(const v1::ReadRequest& req,
                                          uint32_t default_chunk_bytes);

// Bytes [begin, end) of a sidecar.
struct ByteRange {
  uint64_t begin = 0;
  uint64_t end = 0;
};

// The bytes a Read of `offset` and `length` (0: to the end) streams from
// `key`'s file of `size` bytes. OUT_OF_RANGE, naming the key, if the range
// does not lie within the file. On OK, begin == offset <= end <= size.
absl::StatusOr<ByteRange> ReadRange(uint64_t offset, uint64_t length,
                                    uint64_t size, const SidecarKey& key);

// RESOURCE_EXHAUSTED if a BatchRead names more than kMaxKeysPerRequest keys
// (the whole call is refused).
absl::Status CheckBatchReadSize(const v1::BatchReadRequest& req);

// The keys of a BatchRead, validated one by one: a bad key fails its own
// item only.
struct BatchReadKeys {
  std::vector<SidecarKey> valid;
  std::vector<uint32_t> valid_index;  // of each valid key in the request
  // Index in the request and INVALID_ARGUMENT "bad key: ...", in order.
  std::vector<std::pair<uint32_t, absl::Status>> invalid;
};
BatchReadKeys CheckBatchReadKeys(absl::Span<const v1::SidecarKey> keys);

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_READ_REQUEST_H_
