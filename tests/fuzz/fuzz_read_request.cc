// Fuzz target: the checks of the TransferPeer Read RPC
// (services/transfer/read_request.h, as peer_server.cc runs them): the key
// and chunk size of any ReadRequest the input parses to, then its byte
// range against file sizes around the request's own offset and length.
// Properties: a bad key is INVALID_ARGUMENT, a good one passes
// CheckValidKey; the chunk size is within bounds; an accepted range lies in
// the file, starts at the offset and has the requested length (the rest of
// the file for 0); a refused one really does not fit.
#include <cstddef>
#include <cstdint>
#include <limits>

#include "services/transfer/read_request.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  using namespace sidecar::transfer;
  v1::ReadRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  // The default comes from the server's options; derive one from the input
  // so that 0 and out-of-range defaults are tried too.
  const uint32_t default_chunk =
      req.chunk_bytes() ^ static_cast<uint32_t>(req.offset());
  absl::StatusOr<ReadCall> call = CheckReadRequest(req, default_chunk);
  if (!call.ok()) {
    FUZZ_CHECK(call.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  CheckValidKey(call->key);
  FUZZ_CHECK(call->chunk_bytes >= kMinChunkBytes &&
             call->chunk_bytes <= kMaxChunkBytes);

  const uint64_t offset = req.offset(), length = req.length();
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  for (uint64_t file_size :
       {uint64_t{0}, uint64_t{1}, offset, offset - 1, offset + 1, length,
        offset + length, offset + length - 1, kMax, kMax - 1}) {
    absl::StatusOr<ByteRange> r =
        ReadRange(offset, length, file_size, call->key);
    // Whether [offset, offset + length) fits, computed without overflow.
    const bool fits = offset <= file_size && length <= file_size - offset;
    FUZZ_CHECK(r.ok() == fits);
    if (!r.ok()) {
      FUZZ_CHECK(r.status().code() == absl::StatusCode::kOutOfRange);
      continue;
    }
    FUZZ_CHECK(r->begin == offset);
    FUZZ_CHECK(r->begin <= r->end && r->end <= file_size);
    FUZZ_CHECK(r->end - r->begin ==
               (length == 0 ? file_size - offset : length));
  }
  return 0;
}
