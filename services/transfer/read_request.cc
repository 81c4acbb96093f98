#include "services/transfer/read_request.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace sidecar::transfer {
namespace {

absl::Status BadKey(const absl::Status& s) {
  return absl::InvalidArgumentError(absl::StrCat("bad key: ", s.message()));
}

}  // namespace

uint32_t EffectiveChunkBytes(uint32_t requested, uint32_t default_bytes) {
  uint32_t want = requested != 0 ? requested : default_bytes;
  if (want == 0) want = kDefaultChunkBytes;
  return std::clamp(want, kMinChunkBytes, kMaxChunkBytes);
}

absl::StatusOr<ReadCall> CheckReadRequest(const v1::ReadRequest& req,
                                          uint32_t default_chunk_bytes) {
  absl::StatusOr<SidecarKey> key = KeyFromProto(req.key());
  if (!key.ok()) return BadKey(key.status());
  return ReadCall{*std::move(key),
                  EffectiveChunkBytes(req.chunk_bytes(), default_chunk_bytes)};
}

absl::StatusOr<ByteRange> ReadRange(uint64_t offset, uint64_t length,
                                    uint64_t size, const SidecarKey& key) {
  if (offset > size) {
    return absl::OutOfRangeError(
        absl::StrCat("offset ", offset, " is past the end of ",
                     KeyDebugString(key), " (", size, " bytes)"));
  }
  // size - offset cannot wrap: offset <= size.
  if (length > size - offset) {
    return absl::OutOfRangeError(absl::StrCat(
        "offset ", offset, " + length ", length, " is past the end of ",
        KeyDebugString(key), " (", size, " bytes)"));
  }
  return ByteRange{offset, length == 0 ? size : offset + length};
}

absl::Status CheckBatchReadSize(const v1::BatchReadRequest& req) {
  if (static_cast<size_t>(req.keys_size()) > kMaxKeysPerRequest) {
    return absl::ResourceExhaustedError(
        absl::StrCat("BatchRead takes at most ", kMaxKeysPerRequest,
                     " keys; got ", req.keys_size(), ": split the call"));
  }
  return absl::OkStatus();
}

BatchReadKeys CheckBatchReadKeys(absl::Span<const v1::SidecarKey> keys) {
  BatchReadKeys out;
  out.valid.reserve(keys.size());
  out.valid_index.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    absl::StatusOr<SidecarKey> key = KeyFromProto(keys[i]);
    if (!key.ok()) {
      out.invalid.emplace_back(static_cast<uint32_t>(i), BadKey(key.status()));
      continue;
    }
    out.valid.push_back(*std::move(key));
    out.valid_index.push_back(static_cast<uint32_t>(i));
  }
  return out;
}

}  // namespace sidecar::transfer
