// PeerTrust's refresh on a miss: a miss is answered by a refresh that
// started after it, and misses in a loop cost one refresh per interval.
#include "common/peer_trust.h"

#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace sidecar {
namespace {

DeviceCertificate FakeMember(uint8_t seed) {
  DeviceCertificate c;
  c.key_sha256.fill(seed);
  c.device_id = Uuid::Random();
  return c;
}

// The members' source (the availability service, for the transfer service).
class Source {
 public:
  void Admit(const DeviceCertificate& c) {
    absl::MutexLock lock(&mu_);
    members_.push_back(c);
  }
  std::vector<DeviceCertificate> Members() {
    absl::MutexLock lock(&mu_);
    return members_;
  }

 private:
  absl::Mutex mu_;
  std::vector<DeviceCertificate> members_ ABSL_GUARDED_BY(mu_);
};

// A trust set that refreshes from `source_`, counting its refreshes; each
// refresh takes `refresh_delay_`.
class PeerTrustTest : public testing::Test {
 protected:
  PeerTrustTest() {
    trust_.set_refresh([this] {
      ++refreshes_;
      absl::SleepFor(refresh_delay_);
      trust_.Set(source_.Members());
    });
  }

  Source source_;
  PeerTrust trust_;
  std::atomic<int> refreshes_{0};
  absl::Duration refresh_delay_ = absl::ZeroDuration();
};

TEST_F(PeerTrustTest, MemberAdmittedJustAfterARefreshIsFoundOnItsFirstCall) {
  const DeviceCertificate stranger = FakeMember(1);
  EXPECT_FALSE(trust_.DeviceForKeyOrRefresh(stranger.key_sha256).has_value());
  EXPECT_EQ(refreshes_.load(), 1);

  // Admitted a moment after that refresh, well within the interval.
  const DeviceCertificate joiner = FakeMember(2);
  source_.Admit(joiner);
  const absl::Time start = absl::Now();
  std::optional<Uuid> id = trust_.DeviceForKeyOrRefresh(joiner.key_sha256);
  ASSERT_TRUE(id.has_value()) << "a member admitted after the last refresh "
                                 "was refused";
  EXPECT_EQ(*id, joiner.device_id);
  EXPECT_EQ(refreshes_.load(), 2);
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  // Found now without a refresh.
  EXPECT_TRUE(trust_.FindOrRefresh(joiner.device_id).has_value());
  EXPECT_EQ(refreshes_.load(), 2);
}

TEST_F(PeerTrustTest, MissesInALoopCostOneRefreshPerInterval) {
  const DeviceCertificate stranger = FakeMember(7);
  const absl::Time start = absl::Now();
  for (int i = 0; i < 10; ++i) {
    EXPECT_FALSE(trust_.DeviceForKeyOrRefresh(stranger.key_sha256));
  }
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(refreshes_.load(), 10);  // each miss saw a refresh after it...
  EXPECT_GE(took, absl::Milliseconds(9 * 200 - 50));  // ...paced
}

TEST_F(PeerTrustTest, ConcurrentMissesShareARefresh) {
  refresh_delay_ = absl::Milliseconds(50);
  const DeviceCertificate stranger = FakeMember(9);
  EXPECT_FALSE(trust_.DeviceForKeyOrRefresh(stranger.key_sha256));
  refreshes_ = 0;
  std::vector<std::thread> callers;
  for (int i = 0; i < 8; ++i) {
    callers.emplace_back([&] {
      EXPECT_FALSE(trust_.DeviceForKeyOrRefresh(stranger.key_sha256));
    });
  }
  for (std::thread& t : callers) t.join();
  // Eight misses at about the same moment: one or two refreshes, not eight.
  EXPECT_GE(refreshes_.load(), 1);
  EXPECT_LE(refreshes_.load(), 2);
}

}  // namespace
}  // namespace sidecar
