// Fuzz target: the whole Exchange receive path (ExchangeReceiver, with
// DecodeEntries, OriginInfoFromProto and a real PeerCache under it), fed a
// stream of ExchangeResponse messages as one peer would send them.
// Input: repeated [2-byte big-endian length][serialized ExchangeResponse].
// The library's members are the origins whose first id byte is even; the
// sender is member 02..02, this device 04..04. Small bounds (4,096 entries
// per origin and held, 64 messages) so that the fuzzer reaches them.
// Properties: every refusal is INVALID_ARGUMENT or RESOURCE_EXHAUSTED;
// memory held stays within the bound whatever the size hints say; after
// Finish nothing is held; the own origin is never taken from a peer; no
// non-member appears in the cache; no origin exceeds its entry bound; every
// cached address is dialable.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>

#include "services/availability/exchange_receiver.h"
#include "services/availability/gossip_protocol.h"
#include "tests/fuzz/fuzz_support.h"

namespace sidecar::fuzz {
namespace {

using availability::ExchangeReceiver;
using availability::PeerCache;

constexpr size_t kEntriesBound = 4096;
constexpr size_t kMessagesBound = 64;

Uuid Filled(uint8_t b) {
  Uuid u;
  u.bytes.fill(b);
  return u;
}

// Every member signs with one key made at start-up: the signature paths
// run, and a random signature never verifies.
class EvenMembers : public availability::MemberKeys {
 public:
  EvenMembers() {
    char tmpl[] = "/tmp/fuzz_exchange_receive.XXXXXX";
    const char* dir = mkdtemp(tmpl);
    FUZZ_CHECK(dir != nullptr);
    absl::StatusOr<DeviceKey> key = DeviceKey::Create(dir, "fuzz");
    FUZZ_CHECK(key.ok());
    cert_ = key->certificate();
  }
  bool IsMember(const Uuid& device) const override {
    return device.bytes[0] % 2 == 0;
  }
  std::optional<DeviceCertificate> MemberCertificate(
      const Uuid& device) const override {
    if (!IsMember(device)) return std::nullopt;
    return cert_;
  }

 private:
  DeviceCertificate cert_;
};

}  // namespace
}  // namespace sidecar::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  static const EvenMembers* members = new EvenMembers();
  const Uuid self = Filled(4);
  PeerCache cache({self, "", "", "self"}, nullptr, kEntriesBound);
  ExchangeReceiver receiver(
      &cache, members, Filled(2),
      {.max_pending_entries = kEntriesBound, .max_messages = kMessagesBound});
  size_t pos = 0;
  while (pos + 2 <= size) {
    size_t len = (size_t{data[pos]} << 8) | data[pos + 1];
    pos += 2;
    len = std::min(len, size - pos);
    v1::ExchangeResponse msg;
    bool parsed = msg.ParseFromArray(data + pos, static_cast<int>(len));
    pos += len;
    if (!parsed) continue;
    absl::Status s = receiver.OnMessage(msg);
    FUZZ_CHECK(receiver.pending_entries() <= kEntriesBound);
    FUZZ_CHECK(receiver.pending_capacity_bytes() <=
               2 * kEntriesBound * sizeof(availability::Entry));
    if (!s.ok()) {
      FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument ||
                 s.code() == absl::StatusCode::kResourceExhausted);
      break;
    }
  }
  absl::Status s = receiver.Finish();
  FUZZ_CHECK(s.ok() || s.code() == absl::StatusCode::kResourceExhausted);
  FUZZ_CHECK(receiver.pending_entries() == 0);
  for (const PeerCache::OriginView& v : cache.Views()) {
    const Uuid& id = v.info.device_id;
    if (id == self) {
      FUZZ_CHECK(v.state.generation == 0 && v.entries->empty());
      continue;
    }
    FUZZ_CHECK(id.bytes[0] % 2 == 0);
    FUZZ_CHECK(v.entries->size() <= kEntriesBound);
    FUZZ_CHECK(v.info.peer_address.empty() ||
               availability::IsDialableAddress(v.info.peer_address));
    FUZZ_CHECK(v.info.transfer_address.empty() ||
               availability::IsDialableAddress(v.info.transfer_address));
  }
  return 0;
}
