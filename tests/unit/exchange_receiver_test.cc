// ExchangeReceiver against hostile answers: bounds, relayed generations and
// relayed addresses. A real PeerCache and real device keys; the members are a
// small fake of the library.
#include "services/availability/exchange_receiver.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <filesystem>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "services/availability/entry.h"
#include "services/availability/generator_version.h"
#include "services/availability/state_hash.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

class FakeMembers : public MemberKeys {
 public:
  void Add(const DeviceCertificate& cert) { certs_[cert.device_id] = cert; }
  bool IsMember(const Uuid& device) const override {
    return certs_.contains(device);
  }
  std::optional<DeviceCertificate> MemberCertificate(
      const Uuid& device) const override {
    auto it = certs_.find(device);
    if (it == certs_.end()) return std::nullopt;
    return it->second;
  }

 private:
  absl::flat_hash_map<Uuid, DeviceCertificate> certs_;
};

Entry MakeEntry(int n, uint64_t seq, uint16_t variant = 3) {
  Uuid content;
  content.bytes[14] = static_cast<uint8_t>(n >> 8);
  content.bytes[15] = static_cast<uint8_t>(n);
  Sha256Digest sha{};
  sha[0] = static_cast<uint8_t>(n);
  return Entry::Make(content, v1::SIDECAR_KIND_THUMB, v1::SIDECAR_FORMAT_WEBP,
                     variant, 1000 + n, sha, seq, false);
}

std::vector<Entry> Entries(int first, int count, uint64_t first_seq) {
  std::vector<Entry> out;
  for (int i = 0; i < count; ++i) {
    out.push_back(MakeEntry(first + i, first_seq + i));
  }
  return out;
}

class ExchangeReceiverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/exchange_receiver_test.XXXXXX";
    dir_ = mkdtemp(tmpl);
    for (auto [key, name] : {std::pair{&self_, "self"},
                             {&origin_, "origin"},
                             {&relay_, "relay"}}) {
      absl::StatusOr<DeviceKey> k =
          DeviceKey::Create(absl::StrCat(dir_, "/", name), name);
      ASSERT_TRUE(k.ok()) << k.status();
      key->emplace(std::move(*k));
      members_.Add((*key)->certificate());
    }
    cache_ = std::make_unique<PeerCache>(
        OriginInfo{self_->device_id(), "", "", "self"}, nullptr,
        /*max_entries_per_origin=*/1000);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // One batch of `origin`'s entries as the sender would encode it.
  static v1::ExchangeResponse Batch(const DeviceKey& origin,
                                    v1::EntryBatch::Mode mode,
                                    uint64_t generation,
                                    const std::vector<Entry>& entries,
                                    uint64_t up_to_seq) {
    v1::ExchangeResponse r;
    v1::EntryBatch* b = r.mutable_batch();
    b->mutable_origin()->set_device_id(
        std::string(origin.device_id().AsBytes()));
    b->mutable_origin()->set_generation(generation);
    b->set_mode(mode);
    b->set_up_to_seq(up_to_seq);
    if (mode == v1::EntryBatch::MODE_SNAPSHOT) {
      b->set_first(true);
      b->set_last(true);
    }
    EncodeEntries(entries, b);
    return r;
  }
  static std::string SignGeneration(const DeviceKey& signer,
                                    const DeviceKey& origin,
                                    uint64_t generation) {
    return signer.Sign(GenerationStatement(origin.device_id(), generation));
  }

  // The head `signer` makes for `origin` at (generation, max_seq) when the
  // origin's live state is `state`; signed by the origin, it is genuine.
  static SignedHead Head(const DeviceKey& signer, const DeviceKey& origin,
                         uint64_t generation, uint64_t max_seq,
                         std::vector<Entry> state) {
    OriginTable::SortAndDedupe(&state);
    SignedHead h{generation, max_seq, StateHashOf(state), ""};
    h.signature = signer.Sign(HeadStatement(origin.device_id(), h));
    return h;
  }
  static v1::ExchangeResponse WithHead(v1::ExchangeResponse r,
                                       const SignedHead& head) {
    HeadToProto(head, r.mutable_batch()->mutable_origin());
    return r;
  }

  // Applies `msgs` as one answer from `sender`; returns the first error.
  absl::Status Receive(const DeviceKey& sender,
                       const std::vector<v1::ExchangeResponse>& msgs,
                       ReceiveLimits limits = {}) {
    ExchangeReceiver r(cache_.get(), &members_, sender.device_id(), limits);
    absl::Status s = absl::OkStatus();
    for (const auto& m : msgs) {
      s = r.OnMessage(m);
      if (!s.ok()) break;
    }
    s.Update(r.Finish());
    last_skipped_ = r.unsigned_generations_skipped();
    last_refused_ = r.relayed_states_refused();
    return s;
  }

  uint64_t MaxSeq(const DeviceKey& origin) const {
    auto v = cache_->View(origin.device_id());
    return v ? v->state.max_seq : 0;
  }

  uint64_t LiveCount(const DeviceKey& origin) const {
    auto v = cache_->View(origin.device_id());
    return v ? v->live_count : 0;
  }

  std::string dir_;
  std::optional<DeviceKey> self_, origin_, relay_;
  FakeMembers members_;
  std::unique_ptr<PeerCache> cache_;
  size_t last_skipped_ = 0;
  size_t last_refused_ = 0;
};

TEST_F(ExchangeReceiverTest, OriginStartsItsOwnGenerationWithoutSignature) {
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 10, 1), 10)})
                  .ok());
  EXPECT_EQ(cache_->Generation(origin_->device_id()), 5u);
  EXPECT_EQ(LiveCount(*origin_), 10u);
}

TEST_F(ExchangeReceiverTest, RelayCannotMakeOthersForgetAnOrigin) {
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 10, 1), 10)})
                  .ok());
  // An empty snapshot of a newer generation, unsigned: skipped.
  v1::ExchangeResponse wipe =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 6, {}, 0);
  ASSERT_TRUE(Receive(*relay_, {wipe}).ok());
  EXPECT_EQ(last_skipped_, 1u);
  EXPECT_EQ(cache_->Generation(origin_->device_id()), 5u);
  EXPECT_EQ(LiveCount(*origin_), 10u);
  // Signed by the relay instead of the origin: skipped too.
  wipe.mutable_batch()->mutable_origin()->set_generation_signature(
      SignGeneration(*relay_, *origin_, 6));
  ASSERT_TRUE(Receive(*relay_, {wipe}).ok());
  EXPECT_EQ(last_skipped_, 1u);
  EXPECT_EQ(LiveCount(*origin_), 10u);
  // The origin's signature over another generation: skipped.
  wipe.mutable_batch()->mutable_origin()->set_generation_signature(
      SignGeneration(*origin_, *origin_, 7));
  ASSERT_TRUE(Receive(*relay_, {wipe}).ok());
  EXPECT_EQ(last_skipped_, 1u);
  EXPECT_EQ(LiveCount(*origin_), 10u);
}

TEST_F(ExchangeReceiverTest, RelayPassesOnASignedGeneration) {
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 10, 1), 10)})
                  .ok());
  v1::ExchangeResponse next = WithHead(
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 6, Entries(100, 3, 1), 3),
      Head(*origin_, *origin_, 6, 3, Entries(100, 3, 1)));
  next.mutable_batch()->mutable_origin()->set_generation_signature(
      SignGeneration(*origin_, *origin_, 6));
  ASSERT_TRUE(Receive(*relay_, {next}).ok());
  EXPECT_EQ(last_skipped_, 0u);
  EXPECT_EQ(cache_->Generation(origin_->device_id()), 6u);
  EXPECT_EQ(LiveCount(*origin_), 3u);
  // And the signature travels on with the cached origin.
  EXPECT_EQ(cache_->View(origin_->device_id())->info.generation_signature,
            next.batch().origin().generation_signature());
}

TEST_F(ExchangeReceiverTest, RelayedDeltasWithTheOriginsHeadApply) {
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 10, 1), 10)})
                  .ok());
  const SignedHead head = Head(*origin_, *origin_, 5, 15, Entries(0, 15, 1));
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       Entries(10, 5, 11), 15),
                                 head)})
          .ok());
  EXPECT_EQ(last_refused_, 0u);
  EXPECT_EQ(LiveCount(*origin_), 15u);
  // The head came along: this device may relay the state in turn.
  EXPECT_EQ(cache_->View(origin_->device_id())->head, head);
}

// Deltas of a relay are held until the batch that reaches their head's seq:
// an answer that stops before it changes nothing.
TEST_F(ExchangeReceiverTest, RelayedDeltasApplyOnlyOnceTheyReachTheirHead) {
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 10, 1), 10)})
                  .ok());
  const SignedHead head = Head(*origin_, *origin_, 5, 15, Entries(0, 15, 1));
  v1::ExchangeResponse first = WithHead(
      Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5, Entries(10, 2, 11), 12),
      head);
  v1::ExchangeResponse rest = WithHead(
      Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5, Entries(12, 3, 13), 15),
      head);
  ASSERT_TRUE(Receive(*relay_, {first}).ok());
  EXPECT_EQ(LiveCount(*origin_), 10u);
  EXPECT_EQ(MaxSeq(*origin_), 10u);
  ASSERT_TRUE(Receive(*relay_, {first, rest}).ok());
  EXPECT_EQ(LiveCount(*origin_), 15u);
  EXPECT_EQ(MaxSeq(*origin_), 15u);
}

// The gap the generation signature leaves: within the cached generation, a
// relay tries to make this device forget, add or withdraw the origin's
// sidecars, or skip its next changes by claiming a later seq. Each attempt
// is refused and changes nothing; the origin's real changes still apply.
TEST_F(ExchangeReceiverTest, RelayCannotChangeAnOriginWithinItsGeneration) {
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 10, 1), 10)})
                  .ok());
  auto unchanged = [&](const char* attempt) {
    EXPECT_EQ(LiveCount(*origin_), 10u) << attempt;
    EXPECT_EQ(MaxSeq(*origin_), 10u) << attempt;
    EXPECT_EQ(cache_->Generation(origin_->device_id()), 5u) << attempt;
  };
  const v1::ExchangeResponse wipe =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5, {}, 1000);

  // An empty snapshot of the same generation at a later seq: unsigned, ...
  ASSERT_TRUE(Receive(*relay_, {wipe}).ok());
  EXPECT_EQ(last_refused_, 1u);
  unchanged("unsigned wipe");
  // ... with a head the relay signed, ...
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(wipe, Head(*relay_, *origin_, 5, 1000, {}))})
          .ok());
  EXPECT_EQ(last_refused_, 1u);
  unchanged("wipe signed by the relay");
  // ... or with a genuine head of the origin for another seq or state.
  const SignedHead real_11 = Head(*origin_, *origin_, 5, 11, Entries(0, 11, 1));
  ASSERT_TRUE(Receive(*relay_, {WithHead(wipe, real_11)}).ok());
  EXPECT_EQ(last_refused_, 1u);
  unchanged("wipe with a head of another seq");
  v1::ExchangeResponse wipe_11 = WithHead(wipe, real_11);
  wipe_11.mutable_batch()->set_up_to_seq(11);
  ASSERT_TRUE(Receive(*relay_, {wipe_11}).ok());
  EXPECT_EQ(last_refused_, 1u);
  unchanged("wipe with a head of another state");

  // Deltas that add a sidecar the origin does not have, ...
  std::vector<Entry> fake = {MakeEntry(500, 11)};
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       fake, 11),
                                 real_11)})
          .ok());
  EXPECT_EQ(last_refused_, 1u);
  unchanged("an added sidecar");
  // ... withdraw one it has, ...
  Entry withdrawn = MakeEntry(3, 11);
  withdrawn = Entry::Make(withdrawn.content, withdrawn.kind(),
                          withdrawn.format(), withdrawn.variant(),
                          withdrawn.size(), withdrawn.sha256, withdrawn.seq(),
                          /*removed=*/true);
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       {withdrawn}, 11),
                                 real_11)})
          .ok());
  EXPECT_EQ(last_refused_, 1u);
  EXPECT_EQ(cache_->View(origin_->device_id())
                ->entries.Find(EntryKey::Of(MakeEntry(3, 1)))
                ->removed(),
            false);
  unchanged("a withdrawn sidecar");
  // ... or claim a later seq than the head: held, never applied.
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       {}, 1000),
                                 real_11)})
          .ok());
  unchanged("a later seq");

  // The origin's real next changes still apply, from a relay with its head
  // or from the origin itself.
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       Entries(10, 1, 11), 11),
                                 real_11)})
          .ok());
  EXPECT_EQ(last_refused_, 0u);
  EXPECT_EQ(LiveCount(*origin_), 11u);
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       Entries(11, 4, 12), 15)})
                  .ok());
  EXPECT_EQ(LiveCount(*origin_), 15u);
}

// A relay's snapshot of a generation (new, or one this device is behind
// the floor of) is taken only with the origin's head for its entries.
TEST_F(ExchangeReceiverTest, RelayedSnapshotMustMatchTheOriginsHead) {
  v1::ExchangeResponse snap =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5, Entries(0, 10, 1), 10);
  snap.mutable_batch()->mutable_origin()->set_generation_signature(
      SignGeneration(*origin_, *origin_, 5));
  // A head for one entry fewer: refused.
  ASSERT_TRUE(Receive(*relay_, {WithHead(snap, Head(*origin_, *origin_, 5, 10,
                                                    Entries(0, 9, 1)))})
                  .ok());
  EXPECT_EQ(last_refused_, 1u);
  EXPECT_EQ(LiveCount(*origin_), 0u);
  ASSERT_TRUE(Receive(*relay_, {WithHead(snap, Head(*origin_, *origin_, 5, 10,
                                                    Entries(0, 10, 1)))})
                  .ok());
  EXPECT_EQ(last_refused_, 0u);
  EXPECT_EQ(LiveCount(*origin_), 10u);
}

// This device's own head: signed with its key over the digest of its own
// state, made again only when that state changes.
TEST_F(ExchangeReceiverTest, OwnHeadIsSignedAndFollowsTheOwnState) {
  EXPECT_FALSE(cache_->SignedSelfView().has_value());  // no signer yet
  cache_->set_signer(
      [this](absl::string_view statement) { return self_->Sign(statement); });
  cache_->InitSelf(3, "", 10, 0, Entries(0, 10, 1));
  std::optional<PeerCache::OriginView> view = cache_->SignedSelfView();
  ASSERT_TRUE(view.has_value() && view->head.has_value());
  const SignedHead head = *view->head;
  EXPECT_EQ(head.generation, 3u);
  EXPECT_EQ(head.max_seq, 10u);
  EXPECT_EQ(head.state, StateHashOf(Entries(0, 10, 1)));
  // The view is of the state the head signs.
  EXPECT_EQ(view->state.max_seq, 10u);
  EXPECT_EQ(StateHashOf(view->entries.Array()->entries()), head.state);
  EXPECT_TRUE(VerifySignature(self_->certificate(),
                              HeadStatement(self_->device_id(), head),
                              head.signature));
  EXPECT_EQ(cache_->View(self_->device_id())->head, head);
  EXPECT_EQ(cache_->SignedSelfView()->head, head);  // unchanged: same head

  cache_->ApplySelf(Entries(10, 2, 11), 12);
  EXPECT_FALSE(cache_->View(self_->device_id())->head.has_value());
  std::optional<PeerCache::OriginView> next = cache_->SignedSelfView();
  ASSERT_TRUE(next.has_value() && next->head.has_value());
  EXPECT_EQ(next->head->max_seq, 12u);
  EXPECT_EQ(next->state.max_seq, 12u);
  EXPECT_EQ(next->head->state, StateHashOf(Entries(0, 12, 1)));
}

TEST_F(ExchangeReceiverTest, SizeHintReservesNothing) {
  v1::ExchangeResponse first =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5, Entries(0, 3, 1), 3);
  first.mutable_batch()->set_last(false);
  first.mutable_batch()->set_snapshot_entries(uint64_t{1} << 40);
  ExchangeReceiver r(cache_.get(), &members_, origin_->device_id());
  ASSERT_TRUE(r.OnMessage(first).ok());
  EXPECT_EQ(r.pending_entries(), 3u);
  EXPECT_LE(r.pending_capacity_bytes(), 16 * sizeof(Entry));
  ASSERT_TRUE(r.Finish().ok());
  EXPECT_EQ(LiveCount(*origin_), 0u);  // a partial snapshot is dropped
}

TEST_F(ExchangeReceiverTest, SnapshotPartsAreJoinedInOrder) {
  auto part = [&](int first, int count, bool is_first, bool is_last) {
    v1::ExchangeResponse m = Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5,
                                   Entries(first, count, first + 1), 25);
    m.mutable_batch()->set_first(is_first);
    m.mutable_batch()->set_last(is_last);
    return m;
  };
  ExchangeReceiver r(cache_.get(), &members_, origin_->device_id());
  ASSERT_TRUE(r.OnMessage(part(0, 10, true, false)).ok());
  ASSERT_TRUE(r.OnMessage(part(10, 10, false, false)).ok());
  EXPECT_EQ(r.pending_entries(), 20u);
  ASSERT_TRUE(r.OnMessage(part(20, 5, false, true)).ok());
  EXPECT_EQ(r.pending_entries(), 0u);
  ASSERT_TRUE(r.Finish().ok());
  std::optional<PeerCache::OriginView> v = cache_->View(origin_->device_id());
  ASSERT_TRUE(v.has_value());
  const std::vector<Entry> want = Entries(0, 25, 1);
  const std::vector<Entry> got = v->entries.Array()->entries();
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(std::memcmp(&got[i], &want[i], sizeof(Entry)), 0)
        << "entry " << i;
  }
  EXPECT_EQ(v->state.max_seq, 25u);
}

TEST_F(ExchangeReceiverTest, PendingEntriesAreBounded) {
  v1::ExchangeResponse part =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5, Entries(0, 40, 1), 40);
  part.mutable_batch()->set_last(false);
  v1::ExchangeResponse more = part;
  more.mutable_batch()->set_first(false);
  absl::Status s =
      Receive(*origin_, {part, more, more}, {.max_pending_entries = 100});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(LiveCount(*origin_), 0u);
}

TEST_F(ExchangeReceiverTest, MessagesAreBounded) {
  v1::ExchangeResponse summary;
  summary.mutable_summary();
  absl::Status s =
      Receive(*origin_, std::vector<v1::ExchangeResponse>(6, summary),
              {.max_messages = 5});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
}

TEST_F(ExchangeReceiverTest, EntriesPerOriginAreBounded) {
  // The cache keeps at most 1000 entries per origin (SetUp).
  absl::Status s =
      Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5,
                               Entries(0, 1001, 1), 1001)});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 990, 1), 990)})
                  .ok());
  s = Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                               Entries(990, 20, 991), 1010)});
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(LiveCount(*origin_), 990u);
  // Changes of keys it already has still apply.
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       Entries(0, 20, 991), 1010)})
                  .ok());
}

TEST_F(ExchangeReceiverTest, RelayedAddressesOnlyFillGaps) {
  v1::ExchangeResponse own =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5, Entries(0, 1, 1), 1);
  own.mutable_batch()->mutable_origin()->set_transfer_address("origin:7000");
  ASSERT_TRUE(Receive(*origin_, {own}).ok());
  v1::ExchangeResponse lie = WithHead(
      Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5, Entries(1, 1, 2), 2),
      Head(*origin_, *origin_, 5, 2, Entries(0, 2, 1)));
  lie.mutable_batch()->mutable_origin()->set_transfer_address("evil:443");
  lie.mutable_batch()->mutable_origin()->set_peer_address("evil:444");
  ASSERT_TRUE(Receive(*relay_, {lie}).ok());
  OriginInfo info = cache_->View(origin_->device_id())->info;
  EXPECT_EQ(info.transfer_address, "origin:7000");
  EXPECT_EQ(info.peer_address, "evil:444");  // unknown before: a hint
  // The origin's own word replaces it; a malformed address is dropped.
  v1::ExchangeResponse fix =
      Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5, Entries(2, 1, 3), 3);
  fix.mutable_batch()->mutable_origin()->set_peer_address("origin:7001");
  fix.mutable_batch()->mutable_origin()->set_transfer_address("x y:99999");
  ASSERT_TRUE(Receive(*origin_, {fix}).ok());
  info = cache_->View(origin_->device_id())->info;
  EXPECT_EQ(info.peer_address, "origin:7001");
  EXPECT_EQ(info.transfer_address, "origin:7000");
}

TEST_F(ExchangeReceiverTest, OwnOriginAndNonMembersAreNeverTaken) {
  ASSERT_TRUE(Receive(*relay_, {Batch(*self_, v1::EntryBatch::MODE_SNAPSHOT, 9,
                                      Entries(0, 5, 1), 5)})
                  .ok());
  EXPECT_EQ(LiveCount(*self_), 0u);
  absl::StatusOr<DeviceKey> stranger =
      DeviceKey::Create(absl::StrCat(dir_, "/stranger"), "stranger");
  ASSERT_TRUE(stranger.ok());
  ASSERT_TRUE(Receive(*relay_, {Batch(*stranger, v1::EntryBatch::MODE_SNAPSHOT,
                                      1, Entries(0, 5, 1), 5)})
                  .ok());
  EXPECT_FALSE(cache_->View(stranger->device_id()).has_value());
}

// A batch of `origin`'s with one entry that names kMaxBatchVariants new
// variants, "<tag>_<i>" (a batch may list names no entry uses; every name
// listed is interned). EncodeEntries is bypassed to name them. One entry per
// batch keeps the flood under the per-origin entry bound, so that what
// stops it is the dictionary's.
v1::ExchangeResponse VariantFlood(const v1::ExchangeResponse& header,
                                  const std::string& tag) {
  v1::ExchangeResponse m = header;
  v1::EntryBatch* b = m.mutable_batch();
  b->clear_variants();
  b->clear_variant_index();
  for (size_t i = 0; i < kMaxBatchVariants; ++i) {
    b->add_variants(absl::StrCat(tag, "_", i));
  }
  b->add_variant_index(0);
  b->set_up_to_seq(1);
  return m;
}

// `e` with the generator version `version` (interned as this device's).
Entry WithVersion(const Entry& e, absl::string_view version) {
  uint16_t id = GeneratorVersionDict::Global().Intern(version).value();
  return Entry::Make(e.content, e.kind(), e.format(), e.variant(), e.size(),
                     e.sha256, e.seq(), e.removed(), id);
}

TEST_F(ExchangeReceiverTest, GeneratorVersionsArriveAndAreCoveredByTheHead) {
  std::vector<Entry> state = Entries(0, 3, 1);
  state[0] = WithVersion(state[0], "thumbgen 1.2");
  state[1] = WithVersion(state[1], "thumbgen 1.3");
  v1::ExchangeResponse snap =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5, state, 3);
  // Sent as a per-batch dictionary: each string once.
  EXPECT_EQ(snap.batch().generator_versions_size(), 3);  // "", 1.2, 1.3
  EXPECT_EQ(snap.batch().version_index_size(), 3);
  ASSERT_TRUE(Receive(*origin_, {snap}).ok());
  auto view = cache_->View(origin_->device_id());
  ASSERT_TRUE(view.has_value());
  std::optional<Entry> got = view->entries.Find(EntryKey::Of(state[1]));
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(GeneratorVersionOf(*got), "thumbgen 1.3");
  EXPECT_EQ(GeneratorVersionOf(*view->entries.Find(EntryKey::Of(state[2]))),
            "");

  // A relay claims the origin's sidecar 1 was made by another version,
  // with the origin's genuine head of a later seq over the real state: the
  // digest covers the version, so it is refused.
  Entry changed = WithVersion(MakeEntry(1, 4), "thumbgen 9.9");
  std::vector<Entry> real_next = state;
  real_next[1] = MakeEntry(1, 4);  // the origin's real seq 4: no version
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       {changed}, 4),
                                 Head(*origin_, *origin_, 5, 4, real_next))})
          .ok());
  EXPECT_EQ(last_refused_, 1u);
  EXPECT_EQ(GeneratorVersionOf(*cache_->View(origin_->device_id())
                                    ->entries.Find(EntryKey::Of(state[1]))),
            "thumbgen 1.3");
  // The true change passes.
  ASSERT_TRUE(
      Receive(*relay_, {WithHead(Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                       {real_next[1]}, 4),
                                 Head(*origin_, *origin_, 5, 4, real_next))})
          .ok());
  EXPECT_EQ(last_refused_, 0u);
  EXPECT_EQ(GeneratorVersionOf(*cache_->View(origin_->device_id())
                                    ->entries.Find(EntryKey::Of(state[1]))),
            "");
}

TEST_F(ExchangeReceiverTest, HostileGeneratorVersionsAreRefused) {
  v1::ExchangeResponse good =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 5,
            {WithVersion(MakeEntry(0, 1), "thumbgen 1.2")}, 1);
  const size_t dict_before = GeneratorVersionDict::Global().size();
  ASSERT_EQ(good.batch().generator_versions_size(), 1);
  auto expect_refused = [&](v1::ExchangeResponse m, absl::StatusCode code,
                            const char* what) {
    absl::Status s = Receive(*origin_, {m});
    EXPECT_EQ(s.code(), code) << what << ": " << s;
    EXPECT_EQ(LiveCount(*origin_), 0u) << what;
  };
  v1::ExchangeResponse m = good;
  m.mutable_batch()->set_generator_versions(0, std::string(129, 'v'));
  expect_refused(m, absl::StatusCode::kInvalidArgument, "too long");
  m = good;
  m.mutable_batch()->set_generator_versions(0,
                                            "thumbgen \xff"
                                            "1.2");
  expect_refused(m, absl::StatusCode::kInvalidArgument, "not UTF-8");
  m = good;
  m.mutable_batch()->set_generator_versions(0, "thumbgen\n1.2");
  expect_refused(m, absl::StatusCode::kInvalidArgument, "control character");
  m = good;
  m.mutable_batch()->set_version_index(0, 1);
  expect_refused(m, absl::StatusCode::kInvalidArgument, "index outside");
  m = good;
  m.mutable_batch()->add_version_index(0);
  expect_refused(m, absl::StatusCode::kInvalidArgument, "column length");
  m = good;
  for (size_t i = 0; i < kMaxBatchVersions; ++i) {
    m.mutable_batch()->add_generator_versions(absl::StrCat("many ", i));
  }
  expect_refused(m, absl::StatusCode::kResourceExhausted, "too many");
  // A refused batch added nothing to the dictionary.
  EXPECT_EQ(GeneratorVersionDict::Global().size(), dict_before);
  EXPECT_EQ(GeneratorVersionDict::Global().added_by(origin_->device_id()), 0u);
  ASSERT_TRUE(Receive(*origin_, {good}).ok());
  EXPECT_EQ(LiveCount(*origin_), 1u);
}

// Last in this file: it fills the process-wide variant dictionary.
TEST_F(ExchangeReceiverTest, PeerVariantsNeverBlockOwnRegistrations) {
  const v1::ExchangeResponse header =
      Batch(*origin_, v1::EntryBatch::MODE_DELTA, 0, Entries(0, 1, 1), 0);
  VariantDict& dict = VariantDict::Global();
  const size_t before = dict.size();

  // One member floods: it adds its share and no more.
  absl::Status s = absl::OkStatus();
  int batches = 0;
  for (; s.ok() && batches < 100; ++batches) {
    s = Receive(*origin_,
                {VariantFlood(header, absl::StrCat("flood", batches))});
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(dict.added_by(origin_->device_id()), VariantDict::kPerPeerShare);
  EXPECT_LE(dict.size(), before + VariantDict::kPerPeerShare);

  // Another member still names new variants, relaying the same origin's.
  ASSERT_TRUE(Receive(*relay_, {VariantFlood(header, "relayed")}).ok());
  EXPECT_TRUE(dict.Find("relayed_0").has_value());
  EXPECT_EQ(dict.added_by(relay_->device_id()), kMaxBatchVariants);

  // Many members together fill no more than the peers' part.
  absl::StatusOr<uint16_t> id;
  for (uint32_t peer = 0; peer < 64; ++peer) {
    Uuid fake;
    fake.bytes.fill(0);
    std::memcpy(fake.bytes.data(), &peer, sizeof(peer));
    for (size_t i = 0; i < VariantDict::kPerPeerShare; ++i) {
      id = dict.InternFromPeer(absl::StrCat("many", peer, "_", i), fake);
      if (!id.ok()) break;
    }
    if (!id.ok()) break;
  }
  EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(dict.size(), VariantDict::kCapacity - VariantDict::kLocalReserve);

  // This device can still name new variants of its own.
  for (int i = 0; i < 100; ++i) {
    SidecarKey key;
    key.kind = v1::SIDECAR_KIND_THUMB;
    key.format = v1::SIDECAR_FORMAT_WEBP;
    key.variant = absl::StrCat("own", i);
    EXPECT_TRUE(ToEntryKey(key).ok()) << key.variant;
  }
  // A batch with more variants than a batch may name is refused outright.
  v1::EntryBatch wide;
  for (size_t i = 0; i <= kMaxBatchVariants; ++i) wide.add_variants("grid@1x");
  std::vector<Entry> out;
  EXPECT_EQ(DecodeEntries(wide, 1, relay_->device_id(), &out).code(),
            absl::StatusCode::kResourceExhausted);
}

// Fills the process-wide generator version dictionary: keep it last.
TEST_F(ExchangeReceiverTest, PeerGeneratorVersionsNeverBlockOwnRegistrations) {
  GeneratorVersionDict& dict = GeneratorVersionDict::Global();
  const size_t before = dict.size();
  auto flood = [&](const DeviceKey& sender, absl::string_view prefix,
                   int count) {
    v1::ExchangeResponse m =
        Batch(*origin_, v1::EntryBatch::MODE_DELTA, 0, {MakeEntry(0, 1)}, 1);
    m.mutable_batch()->clear_generator_versions();
    m.mutable_batch()->clear_version_index();
    m.mutable_batch()->add_version_index(0);
    for (int i = 0; i < count; ++i) {
      m.mutable_batch()->add_generator_versions(absl::StrCat(prefix, " ", i));
    }
    return Receive(sender, {m});
  };
  // One member floods, batch after batch: it adds its share and no more.
  absl::Status s = absl::OkStatus();
  for (int batch = 0; s.ok() && batch < 20; ++batch) {
    s = flood(*origin_, absl::StrCat("flood", batch), 200);
  }
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(dict.added_by(origin_->device_id()),
            GeneratorVersionDict::kPerPeerShare);
  EXPECT_LE(dict.size(), before + GeneratorVersionDict::kPerPeerShare);
  // Another member still names new versions.
  EXPECT_TRUE(flood(*relay_, "relayed", 10).ok());
  EXPECT_TRUE(dict.Find("relayed 0").has_value());

  // Many members together fill no more than the peers' part.
  absl::StatusOr<uint16_t> id;
  for (uint32_t peer = 0; peer < 64; ++peer) {
    Uuid fake;
    fake.bytes.fill(0xee);
    std::memcpy(fake.bytes.data(), &peer, sizeof(peer));
    for (size_t i = 0; i < GeneratorVersionDict::kPerPeerShare; ++i) {
      id = dict.InternFromPeer(absl::StrCat("many", peer, " ", i), fake);
      if (!id.ok()) break;
    }
    if (!id.ok()) break;
  }
  EXPECT_EQ(id.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(dict.size(), GeneratorVersionDict::kCapacity -
                             GeneratorVersionDict::kLocalReserve);
  // This device can still register new versions of its own.
  for (int i = 0; i < 100; ++i) {
    EXPECT_TRUE(dict.Intern(absl::StrCat("own ", i)).ok()) << i;
  }
}

}  // namespace
}  // namespace sidecar::availability
