// Fuzz target: DecodeEntries (services/availability/gossip_protocol.h), the
// columnar entry batches a peer sends in Exchange, on any EntryBatch the
// input parses to, with the batch's own up_to_seq as the bound, as the
// receiver calls it.
// Properties: on error nothing is appended; on success every entry is
// within the documented bounds and names a valid key, and encoding the
// entries again and decoding that gives the same entries.
// The variant dictionary is process-wide and bounded (65,536 names, 8,192
// per peer): a long run fills a sender's share and then the peers' part,
// and from then on batches with new names are refused with
// RESOURCE_EXHAUSTED, which is a documented answer, not a finding.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "services/availability/entry.h"
#include "services/availability/gossip_protocol.h"
#include "tests/fuzz/fuzz_support.h"

namespace sidecar::fuzz {
namespace {

using availability::Entry;

bool SameEntries(const std::vector<Entry>& a, const std::vector<Entry>& b) {
  return a.size() == b.size() &&
         (a.empty() ||
          std::memcmp(a.data(), b.data(), a.size() * sizeof(Entry)) == 0);
}

// An entry already in the output, to see that decoding leaves it alone.
Entry Sentinel() {
  Uuid u;
  u.bytes.fill(0xab);
  return Entry::Make(u, v1::SIDECAR_KIND_THUMB, v1::SIDECAR_FORMAT_WEBP, 0, 123,
                     Sha256Digest{}, 1, false);
}

}  // namespace
}  // namespace sidecar::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar;
  using namespace sidecar::fuzz;
  v1::EntryBatch batch;
  if (!batch.ParseFromArray(data, static_cast<int>(size))) return 0;
  const uint64_t max_seq = batch.up_to_seq();

  // New names are charged to the sender, up to a share per peer: one of
  // 16 senders, so that a long run also reaches the share of all peers.
  Uuid sender;
  sender.bytes.fill(static_cast<uint8_t>(size % 16));
  std::vector<Entry> out = {Sentinel()};
  const std::vector<Entry> before = out;
  absl::Status s = availability::DecodeEntries(batch, max_seq, sender, &out);
  if (!s.ok()) {
    FUZZ_CHECK(s.code() == absl::StatusCode::kInvalidArgument ||
               s.code() == absl::StatusCode::kResourceExhausted);
    FUZZ_CHECK(SameEntries(out, before));
    return 0;
  }
  FUZZ_CHECK(out.size() == 1 + batch.kinds().size());
  FUZZ_CHECK(std::memcmp(&out[0], &before[0], sizeof(Entry)) == 0);
  std::vector<Entry> decoded(out.begin() + 1, out.end());
  for (size_t i = 0; i < decoded.size(); ++i) {
    const Entry& e = decoded[i];
    FUZZ_CHECK(e.seq() >= 1 && e.seq() <= max_seq);
    FUZZ_CHECK(e.seq() == batch.seqs(static_cast<int>(i)));
    FUZZ_CHECK(e.size() == batch.sizes(static_cast<int>(i)));
    FUZZ_CHECK(e.size() <= availability::kMaxEntrySize);
    FUZZ_CHECK(e.removed() == (batch.removed()[i] == 1));
    CheckValidKey(availability::KeyOf(e));
  }

  v1::EntryBatch again;
  availability::EncodeEntries(decoded, &again);
  std::vector<Entry> round;
  absl::Status s2 = availability::DecodeEntries(again, max_seq, sender, &round);
  // Every name is in the dictionary already, so it cannot be full for them.
  FUZZ_CHECK(s2.ok());
  FUZZ_CHECK(SameEntries(round, decoded));
  return 0;
}
