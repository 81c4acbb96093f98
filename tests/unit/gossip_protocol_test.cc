#include "services/availability/gossip_protocol.h"

#include <gtest/gtest.h>

#include "services/availability/generator_version.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

// The peer new variant names are charged to.
const Uuid kSender = [] {
  Uuid u;
  u.bytes.fill(0x5e);
  return u;
}();

Uuid U(int n) {
  Uuid u;
  u.bytes[15] = static_cast<uint8_t>(n);
  u.bytes[14] = static_cast<uint8_t>(n >> 8);
  return u;
}

TEST(PlanSendTest, DecidesDeltaSnapshotOrNothing) {
  OriginState local{/*generation=*/10, /*max_seq=*/50, /*floor_seq=*/0,
                    /*entry_count=*/40};
  // Never heard of the origin: snapshot.
  EXPECT_EQ(PlanSend(local, nullptr), SendPlan::kSnapshot);
  DigestEntry same{U(1), 10, 50};
  EXPECT_EQ(PlanSend(local, &same), SendPlan::kNothing);
  DigestEntry behind{U(1), 10, 20};
  EXPECT_EQ(PlanSend(local, &behind), SendPlan::kDelta);
  DigestEntry ahead{U(1), 10, 60};
  EXPECT_EQ(PlanSend(local, &ahead), SendPlan::kNothing);
  DigestEntry reset_behind{U(1), 9, 500};  // before a reset: stale copy
  EXPECT_EQ(PlanSend(local, &reset_behind), SendPlan::kSnapshot);
  DigestEntry newer_gen{U(1), 11, 1};  // they saw a reset we did not
  EXPECT_EQ(PlanSend(local, &newer_gen), SendPlan::kNothing);
  OriginState compacted{10, 50, /*floor_seq=*/30, 40};
  EXPECT_EQ(PlanSend(compacted, &behind), SendPlan::kSnapshot);
  DigestEntry above_floor{U(1), 10, 35};
  EXPECT_EQ(PlanSend(compacted, &above_floor), SendPlan::kDelta);
  OriginState empty{10, 0, 0, 0};
  EXPECT_EQ(PlanSend(empty, nullptr), SendPlan::kSnapshot);
  DigestEntry empty_known{U(1), 10, 0};
  EXPECT_EQ(PlanSend(empty, &empty_known), SendPlan::kNothing);
  OriginState address_only{0, 0, 0, 0};
  EXPECT_EQ(PlanSend(address_only, nullptr), SendPlan::kNothing);
}

TEST(PlanSendTest, RemoteIsAhead) {
  OriginState local{10, 50, 0, 40};
  EXPECT_TRUE(RemoteIsAhead(&local, {U(1), 10, 51}));
  EXPECT_FALSE(RemoteIsAhead(&local, {U(1), 10, 50}));
  EXPECT_TRUE(RemoteIsAhead(&local, {U(1), 11, 1}));
  EXPECT_FALSE(RemoteIsAhead(&local, {U(1), 9, 99}));
  EXPECT_TRUE(RemoteIsAhead(nullptr, {U(1), 1, 0}));
  OriginState address_only{0, 0, 0, 0};
  EXPECT_TRUE(RemoteIsAhead(&address_only, {U(1), 1, 0}));
}

TEST(DigestTest, ValidatesProto) {
  google::protobuf::RepeatedPtrField<v1::OriginDigest> p;
  DigestToProto({{U(1), 3, 4}, {U(2), 5, 6}}, &p);
  auto d = DigestFromProto(p);
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(d->size(), 2u);
  EXPECT_EQ((*d)[1].origin, U(2));
  EXPECT_EQ((*d)[1].max_seq, 6u);

  auto dup = p;
  *dup.Add() = p[0];
  EXPECT_EQ(DigestFromProto(dup).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto short_id = p;
  short_id[0].set_device_id("abc");
  EXPECT_EQ(DigestFromProto(short_id).status().code(),
            absl::StatusCode::kInvalidArgument);
  google::protobuf::RepeatedPtrField<v1::OriginDigest> huge;
  for (int i = 0; i < static_cast<int>(kMaxDigestOrigins) + 1; ++i) {
    DigestToProto({{U(i + 1), 1, 1}}, &huge);
  }
  EXPECT_EQ(DigestFromProto(huge).status().code(),
            absl::StatusCode::kResourceExhausted);
}

std::vector<Entry> SomeEntries(int n) {
  uint16_t grid = VariantDict::Global().Intern("grid@2x").value();
  uint16_t custom = VariantDict::Global().Intern("custom@77px").value();
  std::vector<Entry> out;
  for (int i = 0; i < n; ++i) {
    out.push_back(Entry::Make(U(i), v1::SIDECAR_KIND_THUMB,
                              v1::SIDECAR_FORMAT_WEBP, i % 2 ? grid : custom,
                              1000 + i, Sha256Of(std::to_string(i)), i + 1,
                              i % 5 == 0));
  }
  return out;
}

TEST(CodecTest, RoundTripsEntries) {
  std::vector<Entry> in = SomeEntries(100);
  v1::EntryBatch b;
  EncodeEntries(in, &b);
  EXPECT_EQ(b.variants_size(), 2);  // per-message dictionary
  std::string wire = b.SerializeAsString();
  EXPECT_LT(wire.size(), 100u * 72);
  v1::EntryBatch parsed;
  ASSERT_TRUE(parsed.ParseFromString(wire));
  std::vector<Entry> out;
  ASSERT_TRUE(DecodeEntries(parsed, 100, kSender, &out).ok());
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(&in[i], &out[i], sizeof(Entry))) << i;
  }
}

TEST(CodecTest, GeneratorVersionsTravelAsAPerBatchDictionary) {
  std::vector<Entry> plain = SomeEntries(100);
  v1::EntryBatch without;
  EncodeEntries(plain, &without);
  // No version anywhere: no column at all.
  EXPECT_EQ(without.version_index_size(), 0);
  EXPECT_EQ(without.generator_versions_size(), 0);

  GeneratorVersionDict& dict = GeneratorVersionDict::Global();
  const uint16_t ids[] = {dict.Intern("thumbgen 1.2").value(),
                          dict.Intern("thumbgen 1.3").value()};
  std::vector<Entry> in;
  for (const Entry& e : plain) {
    in.push_back(Entry::Make(e.content, e.kind(), e.format(), e.variant(),
                             e.size(), e.sha256, e.seq(), e.removed(),
                             ids[e.seq() % 2]));
  }
  v1::EntryBatch b;
  EncodeEntries(in, &b);
  EXPECT_EQ(b.generator_versions_size(), 2);
  EXPECT_EQ(b.version_index_size(), 100);
  // One byte per entry and each string once.
  const size_t extra = b.ByteSizeLong() - without.ByteSizeLong();
  EXPECT_LE(extra, 100u + 2 * (12 + 2) + 8);  // 133 bytes, as measured
  std::vector<Entry> out;
  ASSERT_TRUE(DecodeEntries(b, 100, kSender, &out).ok());
  ASSERT_EQ(out.size(), in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(0, std::memcmp(&in[i], &out[i], sizeof(Entry))) << i;
    EXPECT_EQ(GeneratorVersionOf(out[i]),
              i % 2 ? "thumbgen 1.2" : "thumbgen 1.3");  // seq = i + 1
  }
}

TEST(CodecTest, RejectsMalformedBatchesWithoutPartialOutput) {
  v1::EntryBatch good;
  EncodeEntries(SomeEntries(10), &good);
  std::vector<Entry> out = SomeEntries(3);

  auto expect_bad = [&](v1::EntryBatch b, const char* what) {
    absl::Status s = DecodeEntries(b, 100, kSender, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << what;
    EXPECT_EQ(out.size(), 3u) << what;
  };
  v1::EntryBatch b = good;
  b.mutable_uuids()->pop_back();
  expect_bad(b, "short uuid column");
  b = good;
  (*b.mutable_kinds())[4] = 99;
  expect_bad(b, "unknown kind");
  b = good;
  (*b.mutable_formats())[4] = 0;
  expect_bad(b, "unspecified format");
  b = good;
  b.set_variants(0, "../../etc/passwd");
  expect_bad(b, "traversal in variant");
  b = good;
  b.set_variant_index(2, 7);
  expect_bad(b, "variant index out of dictionary");
  b = good;
  b.set_sizes(1, kMaxEntrySize + 1);
  expect_bad(b, "size too large");
  b = good;
  b.set_seqs(1, 0);
  expect_bad(b, "seq zero");
  EXPECT_EQ(DecodeEntries(good, 5, kSender, &out).code(),
            absl::StatusCode::kInvalidArgument)
      << "seq above the batch's up_to_seq";
  b = good;
  (*b.mutable_removed())[0] = 2;
  expect_bad(b, "removed flag");
}

TEST(CodecTest, MessageBoundsHold) {
  EXPECT_EQ(ClampMessageBytes(0), kDefaultMessageBytes);
  EXPECT_EQ(ClampMessageBytes(1), kMinMessageBytes);
  EXPECT_EQ(ClampMessageBytes(1u << 30), kMaxMessageBytesLimit);
  // A full message of worst-case entries stays within the bound.
  size_t n = EntriesPerMessage(0);
  std::vector<Entry> in;
  for (size_t i = 0; i < n; ++i) {
    in.push_back(Entry::Make(Uuid::Random(), v1::SIDECAR_KIND_PROXY,
                             v1::SIDECAR_FORMAT_MP4, 4, kMaxEntrySize,
                             Sha256Of("z"), kMaxSeq, false));
  }
  v1::ExchangeResponse r;
  EncodeEntries(in, r.mutable_batch());
  EXPECT_LE(r.ByteSizeLong(), kDefaultMessageBytes);
}

// A peer's Refusal names any int32; only real error codes are taken.
TEST(RefusalTest, CodeIsAnErrorCodeOrUnknown) {
  EXPECT_EQ(RefusalCode(8), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(RefusalCode(16), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(RefusalCode(1), absl::StatusCode::kCancelled);
  EXPECT_EQ(RefusalCode(0), absl::StatusCode::kUnknown);  // OK is no refusal
  EXPECT_EQ(RefusalCode(17), absl::StatusCode::kUnknown);
  EXPECT_EQ(RefusalCode(-3), absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace sidecar::availability
