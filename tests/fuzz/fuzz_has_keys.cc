// Fuzz target: what the HasKeys peer RPC (services/availability/
// peer_service.cc) does with a request before it reads the cache: the batch
// bound, KeyFromProto on each key and FindEntryKey, plus ValidateHello on
// the optional Hello (as Ping checks it). The handler's own code is not
// linked (it needs a server and a cache); this runs the same calls in the
// same order.
// Properties: each key either fails with INVALID_ARGUMENT or passes
// CheckValidKey; looking keys up never adds to the variant dictionary (a
// query must not be able to fill it); a found entry key names the same key.
#include <cstddef>
#include <cstdint>

#include "common/request_limits.h"
#include "services/availability/entry.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/local_inventory.h"
#include "services/availability/variant_dict.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  v1::HasKeysRequest req;
  if (!req.ParseFromArray(data, static_cast<int>(size))) return 0;
  if (req.has_from()) {
    absl::Status s = availability::ValidateHello(req.from());
    FUZZ_CHECK(s.ok() || s.code() == absl::StatusCode::kInvalidArgument);
  }
  if (static_cast<size_t>(req.keys_size()) > kMaxKeysPerRequest) return 0;
  const availability::VariantDict& dict = availability::VariantDict::Global();
  const size_t names = dict.size();
  for (const v1::SidecarKey& proto : req.keys()) {
    absl::StatusOr<SidecarKey> key = KeyFromProto(proto);
    if (!key.ok()) {
      FUZZ_CHECK(key.status().code() == absl::StatusCode::kInvalidArgument);
      // The handler answers the whole call with this error.
      break;
    }
    CheckValidKey(*key);
    std::optional<availability::EntryKey> ek = availability::FindEntryKey(*key);
    if (ek) FUZZ_CHECK(availability::KeyOf(*ek) == *key);
  }
  FUZZ_CHECK(dict.size() == names);
  return 0;
}
