// Fuzz target: the whole Exchange receive path (ExchangeReceiver, with
// DecodeEntries, OriginInfoFromProto and a real PeerCache under it), fed a
// stream of ExchangeResponse messages as one peer would send them.
// Input: repeated [2-byte big-endian length][serialized ExchangeResponse].
// The library's members are the origins whose first id byte is even; the
// sender is member 02..02, this device 04..04. Small bounds (4,096 entries
// per origin and held, 64 messages) so that the fuzzer reaches them.
// A signature field that reads "sign" (a generation signature or a head's)
// is replaced with the members' real signature over what it signs, so that
// the checks behind the signature's are reached.
// Properties: every refusal is INVALID_ARGUMENT or RESOURCE_EXHAUSTED;
// memory held stays within the bound whatever the size hints say; after
// Finish nothing is held; the own origin is never taken from a peer; no
// non-member appears in the cache; no origin exceeds its entry bound; every
// cached address is dialable; a relayed origin holds only a state with its
// origin's head.
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
    key_.emplace(std::move(*key));
  }
  // Signs what a "sign" signature field of `origin` stands for.
  void SignMagic(v1::OriginInfo* origin) const {
    absl::StatusOr<Uuid> id = Uuid::FromBytes(origin->device_id());
    if (!id.ok()) return;
    if (origin->generation_signature() == "sign") {
      // Generation statements name the signer's certificate (one for all
      // members here).
      origin->set_generation_signature(
          key_->Sign(availability::GenerationStatement(cert_.device_id,
                                                       origin->generation())));
    }
    if (origin->head().signature() == "sign") {
      origin->mutable_head()->set_signature(std::string(64, 'x'));
      std::optional<availability::SignedHead> h =
          availability::HeadFromProto(*origin);
      if (h) {
        origin->mutable_head()->set_signature(
            key_->Sign(availability::HeadStatement(*id, *h)));
      }
    }
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
  std::optional<DeviceKey> key_;
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
    if (msg.has_batch()) {
      members->SignMagic(msg.mutable_batch()->mutable_origin());
    }
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
      FUZZ_CHECK(v.state.generation == 0 && v.entries.empty());
      continue;
    }
    FUZZ_CHECK(id.bytes[0] % 2 == 0);
    FUZZ_CHECK(v.entries.size() <= kEntriesBound);
    // What a relay brought is exactly a state its origin signed.
    if (id != Filled(2) && !v.entries.empty()) {
      FUZZ_CHECK(v.head.has_value());
      FUZZ_CHECK(v.head->state ==
                 availability::StateHashOf(v.entries.Array()->entries()));
    }
    FUZZ_CHECK(v.info.peer_address.empty() ||
               availability::IsDialableAddress(v.info.peer_address));
    FUZZ_CHECK(v.info.transfer_address.empty() ||
               availability::IsDialableAddress(v.info.transfer_address));
  }
  return 0;
}
