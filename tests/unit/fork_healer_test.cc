// ForkHealer's timing, on a real LocalInventory and PeerCache over an
// in-memory InventoryStore: the change-log mark follows a change within
// about a second even while a heal waits out its interval, and the heal
// still waits it out.
#include "services/availability/fork_healer.h"

#include <stdlib.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "services/availability/inventory_store.h"
#include "services/availability/local_inventory.h"
#include "services/availability/log_mark.h"
#include "services/availability/peer_cache.h"
#include "tests/support/unused_inventory_store.h"

namespace sidecar::availability {
namespace {

// What LocalInventory's load, registration and new generation need: an
// empty change log whose seqs only count, and a generation ResetChangeLog
// raises. Everything else is unused here.
class FakeStore : public testing::UnusedInventoryStore {
 public:
  explicit FakeStore(Uuid id) {
    id_.device_id = id;
    id_.generation = 1;
  }

  DeviceIdentity identity() const override {
    absl::MutexLock lock(&mu_);
    return id_;
  }
  absl::Status LoadAdvertised(
      const std::function<void(const ChangeRecord&)>&) override {
    return absl::OkStatus();
  }
  absl::Status LoadAdvertisedAfter(
      uint64_t, const std::function<void(const ChangeRecord&)>&) override {
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<ChangeRecord>> ChangeAt(uint64_t) override {
    return std::nullopt;
  }
  absl::StatusOr<uint64_t> MaxSeq() override {
    absl::MutexLock lock(&mu_);
    return max_seq_;
  }
  absl::StatusOr<uint64_t> FloorSeq() override { return 0; }
  absl::StatusOr<ApplyResult> Apply(
      absl::Span<const LocalRecord> upserts, absl::Span<const SidecarKey>,
      absl::Span<const ChangeRecord> changes) override {
    absl::MutexLock lock(&mu_);
    for (const ChangeRecord& c : changes) max_seq_ = std::max(max_seq_, c.seq);
    ApplyResult r;
    r.upserted = static_cast<uint32_t>(upserts.size());
    return r;
  }
  absl::StatusOr<DeviceIdentity> ResetChangeLog() override {
    absl::MutexLock lock(&mu_);
    ++id_.generation;
    max_seq_ = 0;  // no READY sidecar to log again
    return id_;
  }

 private:
  mutable absl::Mutex mu_;
  DeviceIdentity id_ ABSL_GUARDED_BY(mu_);
  uint64_t max_seq_ ABSL_GUARDED_BY(mu_) = 0;
};

absl::Duration CpuTime() {
  rusage u;
  getrusage(RUSAGE_SELF, &u);
  return absl::DurationFromTimeval(u.ru_utime) +
         absl::DurationFromTimeval(u.ru_stime);
}

class ForkHealerTest : public ::testing::Test {
 protected:
  ForkHealerTest()
      : self_(Uuid::Random()),
        store_(self_),
        cache_(OriginInfo{.device_id = self_}, nullptr),
        inventory_(&store_, &cache_, [this] {
          // As the service wires it: every change of the log is noted.
          if (ForkHealer* h = noted_.load()) h->NoteChange();
        }) {}

  void SetUp() override {
    std::string tmpl =
        std::filesystem::temp_directory_path() / "fork_healer_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    ASSERT_TRUE(inventory_.Load().ok());
  }
  void TearDown() override {
    if (healer_) healer_->Stop();
    noted_ = nullptr;
    healer_.reset();
    std::filesystem::remove_all(dir_);
  }

  void Start(absl::Duration min_interval) {
    healer_ = std::make_unique<ForkHealer>(
        &inventory_, &cache_,
        [this](uint64_t generation) {
          absl::MutexLock lock(&mu_);
          heals_.push_back({generation, absl::Now()});
        },
        dir_ + "/" + kLogMarkFile, min_interval);
    noted_ = healer_.get();
  }

  // One READY sidecar more: the log moves by one seq.
  void Register() {
    LocalRecord r;
    r.key.content = Uuid::Random();
    r.key.kind = v1::SIDECAR_KIND_THUMB;
    r.key.variant = "grid@2x";
    r.key.format = v1::SIDECAR_FORMAT_WEBP;
    r.size = 100;
    r.sha256 = Sha256Digest{};
    r.status = v1::SIDECAR_STATUS_READY;
    absl::StatusOr<LocalInventory::RegisterResult> res =
        inventory_.Register({r});
    ASSERT_TRUE(res.ok()) << res.status();
    ASSERT_EQ(res->changes, 1u);
  }

  // A peer that knows more of the current generation than is held: a fork.
  void ClaimFork() {
    DigestEntry view{self_, inventory_.generation(), inventory_.max_seq() + 5};
    healer_->OnPeerView(Uuid::Random(), view);
  }

  // Whether the mark is at (generation, max_seq) or past it.
  bool MarkReached(uint64_t generation, uint64_t max_seq) {
    absl::StatusOr<std::optional<LogPosition>> m =
        ReadLogMark(dir_ + "/" + kLogMarkFile);
    return m.ok() && m->has_value() &&
           !IsBehind(**m, LogPosition{generation, max_seq});
  }
  // Polls `done` every 5 ms until `timeout`; how long it took, or nullopt.
  template <typename F>
  std::optional<absl::Duration> WaitFor(F done, absl::Duration timeout) {
    absl::Time start = absl::Now();
    while (!done()) {
      if (absl::Now() - start > timeout) return std::nullopt;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return absl::Now() - start;
  }
  size_t heals() {
    absl::MutexLock lock(&mu_);
    return heals_.size();
  }

  const Uuid self_;
  FakeStore store_;
  PeerCache cache_;
  LocalInventory inventory_;
  std::string dir_;
  std::unique_ptr<ForkHealer> healer_;
  std::atomic<ForkHealer*> noted_{nullptr};  // healer_, for the inventory
  absl::Mutex mu_;
  struct Heal {
    uint64_t generation;
    absl::Time at;
  };
  std::vector<Heal> heals_ ABSL_GUARDED_BY(mu_);
};

TEST_F(ForkHealerTest, MarksAChangeWhileAHealWaitsOutItsInterval) {
  const absl::Duration kMinInterval = absl::Seconds(5);
  Register();
  Start(kMinInterval);
  ASSERT_TRUE(WaitFor([&] { return MarkReached(1, 1); }, absl::Seconds(5)));

  // The first claim is healed at once: generation 2, marked.
  ClaimFork();
  ASSERT_TRUE(WaitFor([&] { return heals() == 1; }, absl::Seconds(5)));
  ASSERT_TRUE(WaitFor([&] { return MarkReached(2, 0); }, absl::Seconds(5)));

  // A second claim must wait out the interval. Once the healer waits for
  // it (after the second it rests after a mark), the log moves.
  ClaimFork();
  absl::SleepFor(absl::Milliseconds(1300));
  ASSERT_EQ(heals(), 1u);
  Register();
  std::optional<absl::Duration> marked =
      WaitFor([&] { return MarkReached(2, 1); }, absl::Seconds(10));
  ASSERT_TRUE(marked.has_value());
  EXPECT_LT(*marked, absl::Seconds(1))
      << "the mark waited for the heal's interval";

  // The heal still waits out its interval, without spinning meanwhile.
  absl::Time first_heal;
  {
    absl::MutexLock lock(&mu_);
    first_heal = heals_[0].at;
  }
  const absl::Duration cpu0 = CpuTime();
  const absl::Time wall0 = absl::Now();
  EXPECT_EQ(heals(), 1u);
  ASSERT_TRUE(WaitFor([&] { return heals() == 2; }, absl::Seconds(10)));
  const absl::Duration cpu = CpuTime() - cpu0;
  const absl::Duration wall = absl::Now() - wall0;
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(heals_[1].generation, 3u);
  EXPECT_GE(heals_[1].at - first_heal, kMinInterval - absl::Milliseconds(50));
  EXPECT_LT(cpu, wall / 2 + absl::Milliseconds(100))
      << "busy while waiting for the heal";
}

}  // namespace
}  // namespace sidecar::availability
