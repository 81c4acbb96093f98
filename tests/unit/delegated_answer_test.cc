// A leaf's delegation: what it takes from a delegate's answer, and how long
// it keeps it. The calls themselves run in ClusterTest (Leaf*).
#include "services/availability/delegated_answer.h"

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"
#include "services/availability/library.h"

namespace sidecar::availability {
namespace {

class Members : public MemberKeys {
 public:
  explicit Members(std::vector<Uuid> ids) : ids_(ids.begin(), ids.end()) {}
  bool IsMember(const Uuid& d) const override { return ids_.contains(d); }
  std::optional<DeviceCertificate> MemberCertificate(
      const Uuid&) const override {
    return std::nullopt;
  }

 private:
  absl::flat_hash_set<Uuid> ids_;
};

void AddHolder(v1::PeerWhoHasResponse* r, int key, uint32_t device,
               uint64_t size = 10, std::string version = "thumbgen 1") {
  auto* h = r->mutable_results(key)->add_holders();
  h->set_device(device);
  h->set_size(size);
  h->set_sha256(std::string(32, 'a'));
  h->set_generator_version(std::move(version));
}

class ParseDelegatedAnswerTest : public ::testing::Test {
 protected:
  Uuid a_ = Uuid::Random(), b_ = Uuid::Random(), stranger_ = Uuid::Random();
  Members members_{{a_, b_}};
  v1::PeerWhoHasResponse resp_;

  void SetUp() override {
    resp_.add_devices(std::string(a_.AsBytes()));
    resp_.add_devices(std::string(stranger_.AsBytes()));
    resp_.add_devices(std::string(b_.AsBytes()));
    resp_.add_results();
    resp_.add_results();
  }
};

TEST_F(ParseDelegatedAnswerTest, TakesMembersOnlyOncePerKey) {
  AddHolder(&resp_, 0, 0);
  AddHolder(&resp_, 0, 1);  // not a member: dropped
  AddHolder(&resp_, 0, 0);  // twice: once
  AddHolder(&resp_, 1, 2, 77, "");
  absl::StatusOr<KeyAnswers> r = ParseDelegatedAnswer(resp_, 2, members_);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->size(), 2u);
  ASSERT_EQ((*r)[0].size(), 1u);
  EXPECT_EQ((*r)[0][0].device, a_);
  EXPECT_EQ((*r)[0][0].generator_version, "thumbgen 1");
  ASSERT_EQ((*r)[1].size(), 1u);
  EXPECT_EQ((*r)[1][0].device, b_);
  EXPECT_EQ((*r)[1][0].size, 77u);
}

TEST_F(ParseDelegatedAnswerTest, RefusesMalformedAnswers) {
  // Too few results.
  EXPECT_FALSE(ParseDelegatedAnswer(resp_, 3, members_).ok());
  // A device index out of range.
  v1::PeerWhoHasResponse r = resp_;
  AddHolder(&r, 0, 3);
  EXPECT_FALSE(ParseDelegatedAnswer(r, 2, members_).ok());
  // A short digest.
  r = resp_;
  AddHolder(&r, 0, 0);
  r.mutable_results(0)->mutable_holders(0)->set_sha256("short");
  EXPECT_FALSE(ParseDelegatedAnswer(r, 2, members_).ok());
  // A size beyond any entry.
  r = resp_;
  AddHolder(&r, 0, 0, uint64_t{1} << 50);
  EXPECT_FALSE(ParseDelegatedAnswer(r, 2, members_).ok());
  // A generator version with a control character.
  r = resp_;
  AddHolder(&r, 0, 0, 10, "gen\n1");
  EXPECT_FALSE(ParseDelegatedAnswer(r, 2, members_).ok());
  // A device id that is not 16 bytes.
  r = resp_;
  r.set_devices(1, "short");
  EXPECT_FALSE(ParseDelegatedAnswer(r, 2, members_).ok());
  // More holders for one key than devices named.
  r = resp_;
  for (int i = 0; i < 4; ++i) AddHolder(&r, 0, 0);
  EXPECT_FALSE(ParseDelegatedAnswer(r, 2, members_).ok());
  // More devices than a library has.
  r = resp_;
  for (size_t i = 0; i < kMaxMembers; ++i) {
    r.add_devices(std::string(Uuid::Random().AsBytes()));
  }
  EXPECT_FALSE(ParseDelegatedAnswer(r, 2, members_).ok());
}

SidecarKey Key(int i) {
  SidecarKey k;
  k.content = Uuid::Random();
  k.kind = v1::SIDECAR_KIND_THUMB;
  k.format = v1::SIDECAR_FORMAT_WEBP;
  k.variant = absl::StrCat("v", i);
  return k;
}

TEST(AnswerCacheTest, ExpiresAfterTtl) {
  AnswerCache cache(absl::Seconds(30), 10);
  absl::Time t0 = absl::FromUnixSeconds(1000);
  SidecarKey k = Key(1);
  EXPECT_FALSE(cache.Get(k, t0).has_value());
  cache.Put(k, {DelegatedHolder{Uuid::Random(), 5, {}, "x"}}, t0);
  ASSERT_TRUE(cache.Get(k, t0 + absl::Seconds(29)).has_value());
  EXPECT_EQ(cache.Get(k, t0)->at(0).size, 5u);
  EXPECT_FALSE(cache.Get(k, t0 + absl::Seconds(30)).has_value());
}

TEST(AnswerCacheTest, StaysWithinCapacity) {
  AnswerCache cache(absl::Seconds(30), 4);
  absl::Time t0 = absl::FromUnixSeconds(1000);
  std::vector<SidecarKey> keys;
  for (int i = 0; i < 4; ++i) {
    keys.push_back(Key(i));
    cache.Put(keys.back(), {}, t0 + absl::Seconds(i * 10));
  }
  EXPECT_EQ(cache.size(), 4u);
  // At t0+35 s the first has expired: it makes room.
  SidecarKey fifth = Key(5);
  cache.Put(fifth, {}, t0 + absl::Seconds(35));
  EXPECT_EQ(cache.size(), 4u);
  EXPECT_TRUE(cache.Get(fifth, t0 + absl::Seconds(35)).has_value());
  EXPECT_TRUE(cache.Get(keys[3], t0 + absl::Seconds(35)).has_value());
  // None expired: all go, the bound holds.
  SidecarKey sixth = Key(6);
  cache.Put(sixth, {}, t0 + absl::Seconds(36));
  EXPECT_LE(cache.size(), 4u);
  EXPECT_TRUE(cache.Get(sixth, t0 + absl::Seconds(36)).has_value());
}

}  // namespace
}  // namespace sidecar::availability
