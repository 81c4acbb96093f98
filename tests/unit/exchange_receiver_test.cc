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
    return s;
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
  v1::ExchangeResponse next =
      Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT, 6, Entries(100, 3, 1), 3);
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

TEST_F(ExchangeReceiverTest, RelayedDeltasOfTheCachedGenerationApply) {
  ASSERT_TRUE(Receive(*origin_, {Batch(*origin_, v1::EntryBatch::MODE_SNAPSHOT,
                                       5, Entries(0, 10, 1), 10)})
                  .ok());
  ASSERT_TRUE(Receive(*relay_, {Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5,
                                      Entries(10, 5, 11), 15)})
                  .ok());
  EXPECT_EQ(LiveCount(*origin_), 15u);
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
  v1::ExchangeResponse lie =
      Batch(*origin_, v1::EntryBatch::MODE_DELTA, 5, Entries(1, 1, 2), 2);
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

}  // namespace
}  // namespace sidecar::availability
