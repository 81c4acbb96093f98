// LocalInventory's start from its own-origin snapshot, over an in-memory
// change log: whatever happened before and after the snapshot (new
// versions, removals, re-registrations, compaction), the own origin it
// builds is exactly, byte for byte, the one a load of every row builds.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "services/availability/inventory_store.h"
#include "services/availability/local_inventory.h"
#include "services/availability/peer_cache.h"
#include "services/availability/self_snapshot.h"
#include "tests/support/unused_inventory_store.h"

namespace sidecar::availability {
namespace {

// The change log and identity in memory; what LocalInventory's load,
// writes and compaction use. Everything else is unused here.
class MemoryStore : public testing::UnusedInventoryStore {
 public:
  explicit MemoryStore(Uuid id) : id_{.device_id = id, .generation = 7} {}

  DeviceIdentity identity() const override { return id_; }
  absl::Status LoadAdvertised(
      const std::function<void(const ChangeRecord&)>& fn) override {
    return LoadAdvertisedAfter(0, fn);
  }
  absl::Status LoadAdvertisedAfter(
      uint64_t after_seq,
      const std::function<void(const ChangeRecord&)>& fn) override {
    absl::MutexLock lock(&mu_);
    for (const ChangeRecord& c : log_) {
      if (c.seq > after_seq) fn(c);
    }
    return absl::OkStatus();
  }
  absl::StatusOr<std::optional<ChangeRecord>> ChangeAt(uint64_t seq) override {
    absl::MutexLock lock(&mu_);
    for (const ChangeRecord& c : log_) {
      if (c.seq == seq) return c;
    }
    return std::nullopt;
  }
  absl::StatusOr<uint64_t> MaxSeq() override {
    absl::MutexLock lock(&mu_);
    return log_.empty() ? floor_ : std::max(floor_, log_.back().seq);
  }
  absl::StatusOr<uint64_t> FloorSeq() override {
    absl::MutexLock lock(&mu_);
    return floor_;
  }
  // Every row counts as old enough.
  absl::StatusOr<uint64_t> SeqLoggedBefore(absl::Time) override {
    return MaxSeq();
  }
  absl::StatusOr<uint64_t> CompactRange(uint64_t from, uint64_t to,
                                        absl::Span<const uint64_t> keep,
                                        uint64_t floor) override {
    absl::MutexLock lock(&mu_);
    const size_t before = log_.size();
    std::erase_if(log_, [&](const ChangeRecord& c) {
      return c.seq >= from && c.seq < to &&
             !std::binary_search(keep.begin(), keep.end(), c.seq);
    });
    floor_ = std::max(floor_, floor);
    return before - log_.size();
  }
  absl::Status VacuumChangeLog() override { return absl::OkStatus(); }
  absl::StatusOr<ApplyResult> Apply(
      absl::Span<const LocalRecord> upserts, absl::Span<const SidecarKey>,
      absl::Span<const ChangeRecord> changes) override {
    absl::MutexLock lock(&mu_);
    log_.insert(log_.end(), changes.begin(), changes.end());
    ApplyResult r;
    r.upserted = static_cast<uint32_t>(upserts.size());
    return r;
  }

  size_t rows() {
    absl::MutexLock lock(&mu_);
    return log_.size();
  }

 private:
  const DeviceIdentity id_;
  absl::Mutex mu_;
  std::vector<ChangeRecord> log_ ABSL_GUARDED_BY(mu_);  // ascending seq
  uint64_t floor_ ABSL_GUARDED_BY(mu_) = 0;
};

// The own origin as a start builds it.
struct OwnOrigin {
  OriginState state;
  uint64_t live = 0;
  Entries entries;
  uint64_t rows_loaded = 0;
};

class LocalInventorySnapshotTest : public ::testing::TestWithParam<int> {
 protected:
  LocalInventorySnapshotTest()
      : self_(Uuid::Random()),
        store_(self_),
        cache_(OriginInfo{.device_id = self_}, nullptr),
        inventory_(&store_, &cache_, nullptr),
        rng_(GetParam()) {
    for (int i = 0; i < 40; ++i) contents_.push_back(Uuid::Random());
    path_ = absl::StrCat(::testing::TempDir(), "/local_inventory_snapshot_",
                         getpid(), "_", GetParam());
    std::filesystem::remove(path_);
    inventory_.set_snapshot_path(path_);
    EXPECT_TRUE(inventory_.Load().ok());
  }
  ~LocalInventorySnapshotTest() override { std::filesystem::remove(path_); }

  SidecarKey RandomKey() {
    static const char* kVariants[] = {"grid@2x", "snap-a", "snap-b"};
    return SidecarKey{
        contents_[rng_() % contents_.size()],
        rng_() % 2 ? v1::SIDECAR_KIND_THUMB : v1::SIDECAR_KIND_OCR,
        kVariants[rng_() % 3],
        rng_() % 2 ? v1::SIDECAR_FORMAT_WEBP : v1::SIDECAR_FORMAT_JSON};
  }

  // A batch of registrations (new sizes, checksums or generator versions)
  // and removals of random keys.
  void RandomWrites(int batches) {
    for (int b = 0; b < batches; ++b) {
      if (rng_() % 3 == 0) {
        std::vector<SidecarKey> keys;
        for (int i = 0; i < 4; ++i) {
          SidecarKey k = RandomKey();
          if (std::find(keys.begin(), keys.end(), k) == keys.end()) {
            keys.push_back(k);
          }
        }
        ASSERT_TRUE(inventory_.Remove(keys).ok());
        continue;
      }
      std::vector<LocalRecord> records;
      for (int i = 0; i < 6; ++i) {
        LocalRecord r;
        r.key = RandomKey();
        if (std::any_of(records.begin(), records.end(),
                        [&](const LocalRecord& o) { return o.key == r.key; })) {
          continue;
        }
        r.size = rng_() % 3;
        r.sha256 = Sha256Of(absl::StrCat(r.size));
        r.status = v1::SIDECAR_STATUS_READY;
        r.generator_version = absl::StrCat("gen-", rng_() % 3);
        records.push_back(std::move(r));
      }
      ASSERT_TRUE(inventory_.Register(std::move(records)).ok());
    }
  }

  void Compact() {
    ASSERT_TRUE(inventory_.CompactLog(absl::InfiniteFuture(), 7).ok());
  }

  // A start on the store as it is, with or without the snapshot.
  OwnOrigin Start(bool use_snapshot) {
    PeerCache cache(OriginInfo{.device_id = self_}, nullptr);
    LocalInventory inventory(&store_, &cache, nullptr);
    if (use_snapshot) inventory.set_snapshot_path(path_);
    EXPECT_TRUE(inventory.Load().ok());
    std::optional<PeerCache::OriginView> view = cache.View(self_);
    EXPECT_TRUE(view.has_value());
    return {view->state, view->live_count, view->entries.Array()->entries(),
            inventory.rows_loaded()};
  }

  // Starts both ways and expects the same own origin; returns the rows the
  // start with the snapshot read.
  uint64_t ExpectSameStart() {
    OwnOrigin full = Start(false);
    OwnOrigin fast = Start(true);
    EXPECT_EQ(full.rows_loaded, store_.rows());
    EXPECT_EQ(fast.state.generation, full.state.generation);
    EXPECT_EQ(fast.state.max_seq, full.state.max_seq);
    EXPECT_EQ(fast.state.floor_seq, full.state.floor_seq);
    EXPECT_EQ(fast.state.entry_count, full.state.entry_count);
    EXPECT_EQ(fast.live, full.live);
    EXPECT_EQ(fast.entries.size(), full.entries.size());
    if (fast.entries.size() == full.entries.size()) {
      EXPECT_EQ(std::memcmp(fast.entries.data(), full.entries.data(),
                            full.entries.size() * sizeof(Entry)),
                0);
    }
    return fast.rows_loaded;
  }

  const Uuid self_;
  MemoryStore store_;
  PeerCache cache_;
  LocalInventory inventory_;
  std::mt19937 rng_;
  std::vector<Uuid> contents_;
  std::string path_;
};

TEST_P(LocalInventorySnapshotTest, WritesAfterTheSnapshotAreApplied) {
  RandomWrites(30);
  absl::StatusOr<bool> written = inventory_.WriteSnapshot();
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_TRUE(*written);
  // The file holds this state already.
  EXPECT_FALSE(*inventory_.WriteSnapshot());
  EXPECT_EQ(ExpectSameStart(), 0u);  // nothing logged since
  RandomWrites(30);
  EXPECT_LT(ExpectSameStart(), store_.rows()) << "the snapshot was not used";
}

TEST_P(LocalInventorySnapshotTest, CompactionBeforeTheSnapshot) {
  RandomWrites(30);
  Compact();
  RandomWrites(10);
  ASSERT_TRUE(inventory_.WriteSnapshot().ok());
  RandomWrites(20);
  EXPECT_LT(ExpectSameStart(), store_.rows());
}

// Compaction after the snapshot may drop the tombstones of keys the
// snapshot holds live: a floor above the snapshot's seq means a full load.
TEST_P(LocalInventorySnapshotTest, CompactionAfterTheSnapshot) {
  RandomWrites(30);
  ASSERT_TRUE(inventory_.WriteSnapshot().ok());
  RandomWrites(30);
  Compact();
  OwnOrigin fast = Start(true);
  ExpectSameStart();
  if (fast.state.floor_seq > 0) {
    EXPECT_EQ(fast.rows_loaded, store_.rows()) << "the snapshot was used";
  }
}

// Compaction right after the snapshot drops tombstones it holds, at or
// below the new floor, which is not above the snapshot's seq: the snapshot
// is used and those tombstones go.
TEST_P(LocalInventorySnapshotTest, CompactionRightAfterTheSnapshot) {
  RandomWrites(30);
  // The last row stays (compaction would drop a last tombstone, and a
  // snapshot whose last row is gone is not used).
  LocalRecord last;
  last.key = {Uuid::Random(), v1::SIDECAR_KIND_THUMB, "grid@2x",
              v1::SIDECAR_FORMAT_WEBP};
  last.sha256 = Sha256Of("last");
  last.status = v1::SIDECAR_STATUS_READY;
  ASSERT_TRUE(inventory_.Register({last}).ok());
  ASSERT_TRUE(inventory_.WriteSnapshot().ok());
  Compact();
  RandomWrites(10);
  ASSERT_GT(cache_.View(self_)->state.floor_seq, 0u) << "no tombstone dropped";
  EXPECT_LT(ExpectSameStart(), store_.rows()) << "the snapshot was not used";
}

// A snapshot of the same generation whose last row the database does not
// hold (a log rewritten under it) is not used.
TEST_P(LocalInventorySnapshotTest, SnapshotNotMatchingTheRowAtItsSeq) {
  RandomWrites(10);
  std::optional<PeerCache::OriginView> view = cache_.View(self_);
  ASSERT_TRUE(view.has_value());
  Entries entries = view->entries.Array()->entries();
  for (Entry& e : entries) {
    // Live for a tombstone or the other way round: a row the log never held.
    if (e.seq() == view->state.max_seq) e.size_bits ^= uint64_t{1} << 52;
  }
  ASSERT_TRUE(WriteSelfSnapshot(path_,
                                {self_, view->state.generation,
                                 view->state.max_seq, view->state.floor_seq, 0},
                                entries)
                  .ok());
  RandomWrites(5);
  EXPECT_EQ(ExpectSameStart(), store_.rows());
}

INSTANTIATE_TEST_SUITE_P(Seeds, LocalInventorySnapshotTest,
                         ::testing::Range(1, 9));

}  // namespace
}  // namespace sidecar::availability
