// Fuzz target: the checks of the TransferPeer BatchRead RPC
// (services/transfer/read_request.h, as peer_server.cc runs them) on any
// BatchReadRequest the input parses to: the bound on the number of keys,
// then each key on its own.
// Properties: every key of the request ends up exactly once, valid (and
// passing CheckValidKey, equal to KeyFromProto of it) or invalid with
// INVALID_ARGUMENT "bad key: ...", both lists in request order.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/strings/match.h"
#include "services/transfer/read_request.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  using namespace sidecar::transfer;
  v1::BatchReadRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (absl::Status s = CheckBatchReadSize(req); !s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kResourceExhausted);
    FUZZ_CHECK(static_cast<size_t>(req.keys_size()) > kMaxKeysPerRequest);
    return 0;
  }
  FUZZ_CHECK(static_cast<size_t>(req.keys_size()) <= kMaxKeysPerRequest);
  // The server copies the keys out of the request, as here.
  const std::vector<v1::SidecarKey> protos(req.keys().begin(),
                                           req.keys().end());
  BatchReadKeys keys = CheckBatchReadKeys(protos);
  FUZZ_CHECK(keys.valid.size() == keys.valid_index.size());
  FUZZ_CHECK(keys.valid.size() + keys.invalid.size() ==
             static_cast<size_t>(req.keys_size()));
  size_t v = 0, b = 0;
  for (int i = 0; i < req.keys_size(); ++i) {
    absl::StatusOr<SidecarKey> key = KeyFromProto(req.keys(i));
    if (key.ok()) {
      FUZZ_CHECK(v < keys.valid.size() &&
                 keys.valid_index[v] == static_cast<uint32_t>(i));
      FUZZ_CHECK(keys.valid[v] == *key);
      CheckValidKey(keys.valid[v]);
      ++v;
    } else {
      FUZZ_CHECK(b < keys.invalid.size() &&
                 keys.invalid[b].first == static_cast<uint32_t>(i));
      const absl::Status& s = keys.invalid[b].second;
      FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument);
      FUZZ_CHECK(absl::StartsWith(s.message(), "bad key: "));
      ++b;
    }
  }
  return 0;
}
