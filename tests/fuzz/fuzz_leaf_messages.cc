// Fuzz target: what a leaf device and the peers it talks to take from the
// wire beyond the gossip batches. The first byte chooses:
//  - even: the rest is a PeerWhoHasResponse, a delegate's answer, given to
//    ParseDelegatedAnswer (services/availability/delegated_answer.h) for as
//    many keys as the first byte's high bits say (0..127), as the leaf
//    does; members are the ids whose first byte is even;
//  - odd: the rest is a Subscription, given to Subscription::FromProto
//    (services/availability/subscription.h), as a full device does before
//    it filters its answer to a leaf.
// Properties: errors are INVALID_ARGUMENT or RESOURCE_EXHAUSTED; an accepted
// answer has one list per key, members only, no device twice per key, sizes
// within an entry's bound and valid generator versions; a subscription
// never adds to the variant dictionary, and matches only kinds it names.
#include <cstddef>
#include <cstdint>

#include "absl/container/flat_hash_set.h"
#include "services/availability/delegated_answer.h"
#include "services/availability/entry.h"
#include "services/availability/generator_version.h"
#include "services/availability/subscription.h"
#include "services/availability/variant_dict.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace sidecar;
using namespace sidecar::availability;

class EvenMembers : public MemberKeys {
 public:
  bool IsMember(const Uuid& d) const override {
    return (d.bytes[0] & 1) == 0;
  }
  std::optional<DeviceCertificate> MemberCertificate(
      const Uuid&) const override {
    return std::nullopt;
  }
};

bool Refusal(const absl::Status& s) {
  return s.code() == absl::StatusCode::kInvalidArgument ||
         s.code() == absl::StatusCode::kResourceExhausted;
}

void DelegatedAnswer(uint8_t selector, const uint8_t* data, size_t size) {
  v1::PeerWhoHasResponse resp;
  if (!resp.ParseFromArray(data, static_cast<int>(size))) return;
  const size_t keys = selector >> 1;
  static const EvenMembers members;
  absl::StatusOr<KeyAnswers> r = ParseDelegatedAnswer(resp, keys, members);
  if (!r.ok()) {
    FUZZ_CHECK(Refusal(r.status()));
    return;
  }
  FUZZ_CHECK(r->size() == keys);
  for (const auto& holders : *r) {
    absl::flat_hash_set<Uuid> seen;
    for (const DelegatedHolder& h : holders) {
      FUZZ_CHECK(members.IsMember(h.device));
      FUZZ_CHECK(seen.insert(h.device).second);
      FUZZ_CHECK(h.size <= kMaxEntrySize);
      FUZZ_CHECK(ValidateGeneratorVersion(h.generator_version).ok());
    }
  }
}

void SubscriptionMessage(const uint8_t* data, size_t size) {
  v1::Subscription proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return;
  const VariantDict& dict = VariantDict::Global();
  const size_t names = dict.size();
  absl::StatusOr<Subscription> s = Subscription::FromProto(proto);
  FUZZ_CHECK(dict.size() == names);
  if (!s.ok()) {
    FUZZ_CHECK(Refusal(s.status()));
    return;
  }
  FUZZ_CHECK(s->max_entries() == proto.max_entries());
  // Every kind, with the dictionary's first variant: matched only if named.
  for (int k = 1; k <= v1::SidecarKind_MAX; ++k) {
    Entry e = Entry::Make(Uuid{}, static_cast<Kind>(k),
                          v1::SIDECAR_FORMAT_WEBP, 0, 1, Sha256Digest{}, 1,
                          false);
    bool named = false;
    for (int i = 0; i < proto.kinds_size(); ++i) named |= proto.kinds(i) == k;
    if (!named) FUZZ_CHECK(!s->Matches(e));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if ((data[0] & 1) == 0) {
    DelegatedAnswer(data[0], data + 1, size - 1);
  } else {
    SubscriptionMessage(data + 1, size - 1);
  }
  return 0;
}
