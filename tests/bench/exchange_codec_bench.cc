// In-process cost of an initial exchange of 1M entries, by stage, beside a
// memcpy of the same bytes: the sender's encoding and serialization of the
// snapshot's messages, and the receiver's parsing, decoding and applying
// them (ExchangeReceiver into a PeerCache). No TLS and no sockets: what is
// left of availability_bench's exchange/raw ratio after these is transport.
#include <benchmark/benchmark.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/sha256.h"
#include "services/availability/exchange_receiver.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/peer_cache.h"
#include "tests/support/bench_entries.h"

namespace sidecar::availability {
namespace {

constexpr int kEntries = 1'000'000;

class OneMember : public MemberKeys {
 public:
  explicit OneMember(Uuid id) : id_(id) {}
  bool IsMember(const Uuid& d) const override { return d == id_; }
  std::optional<DeviceCertificate> MemberCertificate(
      const Uuid&) const override {
    return std::nullopt;
  }

 private:
  Uuid id_;
};

// The sender's side, built once: 1M entries in key order (6 variants of
// each content, as a library of thumbnails has), and their messages.
struct Snapshot {
  Uuid origin = Uuid::Random();
  std::vector<Entry> entries;
  std::vector<std::string> wire;  // serialized ExchangeResponse messages
  size_t bytes = 0;

  Snapshot() {
    entries = testing::BenchEntries(kEntries);
    wire = Encode();
    for (const std::string& w : wire) bytes += w.size();
  }

  std::vector<std::string> Encode() const {
    std::vector<std::string> out;
    const size_t per = EntriesPerMessage(kDefaultMessageBytes);
    v1::ExchangeResponse msg;
    for (size_t pos = 0; pos < entries.size(); pos += per) {
      size_t n = std::min(per, entries.size() - pos);
      msg.Clear();
      v1::EntryBatch* b = msg.mutable_batch();
      OriginInfoToProto({origin, "", "", "desktop"}, 1, b->mutable_origin());
      b->set_mode(v1::EntryBatch::MODE_SNAPSHOT);
      b->set_first(pos == 0);
      if (pos == 0) b->set_snapshot_entries(entries.size());
      b->set_last(pos + n == entries.size());
      b->set_up_to_seq(kEntries);
      EncodeEntries(absl::MakeConstSpan(entries).subspan(pos, n), b);
      out.push_back(msg.SerializeAsString());
    }
    return out;
  }
};

Snapshot& TheSnapshot() {
  static Snapshot* s = new Snapshot();
  return *s;
}

void BM_SenderEncodeAndSerialize(benchmark::State& state) {
  Snapshot& s = TheSnapshot();
  for (auto _ : state) benchmark::DoNotOptimize(s.Encode());
  state.SetBytesProcessed(state.iterations() * s.bytes);
}
BENCHMARK(BM_SenderEncodeAndSerialize)->Unit(benchmark::kMillisecond);

// Parse + OnMessage + Finish into an empty cache: what B's gossip thread
// does with the messages gRPC hands it.
void BM_ReceiverParseDecodeApply(benchmark::State& state) {
  Snapshot& s = TheSnapshot();
  OneMember members(s.origin);
  for (auto _ : state) {
    PeerCache cache(OriginInfo{Uuid::Random()}, nullptr);
    ExchangeReceiver r(&cache, &members, s.origin);
    v1::ExchangeResponse msg;
    for (const std::string& w : s.wire) {
      if (!msg.ParseFromString(w)) state.SkipWithError("parse");
      if (!r.OnMessage(msg).ok()) state.SkipWithError("OnMessage");
    }
    if (!r.Finish().ok()) state.SkipWithError("Finish");
    if (cache.TotalEntries() != kEntries) state.SkipWithError("entries");
  }
  state.SetBytesProcessed(state.iterations() * s.bytes);
}
BENCHMARK(BM_ReceiverParseDecodeApply)->Unit(benchmark::kMillisecond);

// Parsing alone.
void BM_ReceiverParseOnly(benchmark::State& state) {
  Snapshot& s = TheSnapshot();
  for (auto _ : state) {
    v1::ExchangeResponse msg;
    for (const std::string& w : s.wire) {
      if (!msg.ParseFromString(w)) state.SkipWithError("parse");
    }
  }
  state.SetBytesProcessed(state.iterations() * s.bytes);
}
BENCHMARK(BM_ReceiverParseOnly)->Unit(benchmark::kMillisecond);

// Baseline: a copy of the same bytes.
void BM_BaselineMemcpy(benchmark::State& state) {
  Snapshot& s = TheSnapshot();
  std::string dst(1 << 20, '\0');
  for (auto _ : state) {
    for (const std::string& w : s.wire) {
      if (dst.size() < w.size()) dst.resize(w.size());
      std::memcpy(dst.data(), w.data(), w.size());
      benchmark::ClobberMemory();
    }
  }
  state.SetBytesProcessed(state.iterations() * s.bytes);
}
BENCHMARK(BM_BaselineMemcpy)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace sidecar::availability

BENCHMARK_MAIN();
