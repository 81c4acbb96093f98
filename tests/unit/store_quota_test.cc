// The store quota: its flags, its arithmetic, the eviction choice, and the
// Evictor's order of work (journal, withdraw, delete; recovery after a
// crash in between) against a fake availability service on a real
// directory.
#include "services/transfer/store_quota.h"

#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"
#include "services/transfer/evictor.h"

namespace sidecar::transfer {
namespace {

constexpr Kind kThumb = v1::SIDECAR_KIND_THUMB;
constexpr Kind kProxy = v1::SIDECAR_KIND_PROXY;

v1::KindUsage Usage(Kind kind, uint64_t own, uint64_t fetched) {
  v1::KindUsage u;
  u.set_kind(kind);
  u.set_own_bytes(own);
  u.set_own_count(own > 0);
  u.set_fetched_bytes(fetched);
  u.set_fetched_count(fetched > 0);
  return u;
}

TEST(QuotaConfigTest, ParsesKindsAndNamesWhatIsWrong) {
  absl::StatusOr<QuotaConfig> c = QuotaConfig::Parse(0, "thumb:2G, proxy:20G");
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_TRUE(c->enabled());
  EXPECT_EQ(c->KindQuota(kThumb), 2ull << 30);
  EXPECT_EQ(c->KindQuota(kProxy), 20ull << 30);
  EXPECT_EQ(c->KindQuota(v1::SIDECAR_KIND_OCR), 0u);
  EXPECT_FALSE(QuotaConfig::Parse(0, "")->enabled());
  EXPECT_TRUE(QuotaConfig::Parse(5, "")->enabled());

  absl::StatusOr<QuotaConfig> bad = QuotaConfig::Parse(0, "thumbz:2G");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'thumbz' is no kind"),
            std::string::npos)
      << bad.status();
  bad = QuotaConfig::Parse(0, "thumb:lots");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("thumb:lots"), std::string::npos);
  EXPECT_FALSE(QuotaConfig::Parse(0, "thumb:0").ok());
  EXPECT_FALSE(QuotaConfig::Parse(0, "thumb:1G,thumbs:2G").ok());
}

TEST(StoreQuotaTest, NeedCountsOwnFetchedAndAdmittedBytes) {
  StoreQuota q(*QuotaConfig::Parse(1000, "thumb:300"));
  q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 150), Usage(kProxy, 400, 200)});
  EXPECT_EQ(q.Used(), 850u);
  EXPECT_EQ(q.UsedOf(kThumb), 250u);
  EXPECT_TRUE(q.NeedFor(kThumb, 50).none());
  EXPECT_EQ(q.NeedFor(kThumb, 60).of_kind, 10u);
  EXPECT_EQ(q.NeedFor(kThumb, 60).total, 0u);
  EXPECT_EQ(q.NeedFor(kProxy, 200).total, 50u);
  EXPECT_EQ(q.NeedFor(kProxy, 200).of_kind, 0u);
  EXPECT_FALSE(q.Over());

  q.Admitted(kThumb, 50);  // a fetch in flight
  EXPECT_EQ(q.NeedFor(kThumb, 1).of_kind, 1u);
  std::string why = q.PrefetchRefusal(kThumb, 1);
  EXPECT_NE(why.find("store quota of 300 B for thumb reached (300 B used"),
            std::string::npos)
      << why;
  EXPECT_NE(why.find("prefetch resumes when space frees"), std::string::npos);

  q.Evicted(kThumb, 1, 150);
  EXPECT_EQ(q.UsedOf(kThumb), 150u);
  // A read replaces the usage; the fetch ended before it started, so the
  // read has its bytes and they stop counting as admitted.
  q.Ended(kThumb, 50);
  q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 250), Usage(kProxy, 700, 0)});
  EXPECT_EQ(q.admitted(), 0u);
  EXPECT_TRUE(q.Over());
  EXPECT_EQ(q.NeedFor(kThumb, 0).of_kind, 50u);
  EXPECT_EQ(q.NeedFor(kProxy, 0).total, 50u);
}

// The interleaving that let admissions pass the quota: a fetch is admitted,
// the usage is read while it runs (its sidecar is not registered yet), and
// the next admission must still see its bytes.
TEST(StoreQuotaTest, ARunningFetchStaysCountedAcrossReads) {
  StoreQuota q(*QuotaConfig::Parse(300, ""));
  q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 0)});
  ASSERT_TRUE(q.NeedFor(kThumb, 150).none());
  q.Admitted(kThumb, 150);
  uint64_t read = q.StartRead();
  ASSERT_TRUE(q.SetUsage(read, {Usage(kThumb, 100, 0)}));
  EXPECT_EQ(q.Used(), 250u);
  EXPECT_EQ(q.NeedFor(kThumb, 100).total, 50u);
  // Reads while it runs change nothing.
  q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 0)});
  EXPECT_EQ(q.running(), 150u);
  EXPECT_EQ(q.Used(), 250u);
}

// A fetch that ends (registers its sidecar) after a read started may be
// missing from that read: it counts until a read started after its end.
TEST(StoreQuotaTest, EndedBytesCountUntilAReadStartedAfterTheEnd) {
  StoreQuota q(*QuotaConfig::Parse(300, "thumb:250"));
  q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 0)});
  q.Admitted(kThumb, 150);
  uint64_t read = q.StartRead();  // reads the database without the fetch
  q.Ended(kThumb, 150);           // registered just after
  EXPECT_EQ(q.running(), 0u);
  ASSERT_TRUE(q.SetUsage(read, {Usage(kThumb, 100, 0)}));
  EXPECT_EQ(q.admitted(), 150u);
  EXPECT_EQ(q.UsedOf(kThumb), 250u);
  EXPECT_EQ(q.NeedFor(kThumb, 1).of_kind, 1u);
  // The next read has it: counted once.
  ASSERT_TRUE(q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 150)}));
  EXPECT_EQ(q.admitted(), 0u);
  EXPECT_EQ(q.UsedOf(kThumb), 250u);

  // Ended before the read started: the read has it.
  q.Admitted(kThumb, 20);
  q.Admitted(kProxy, 30);
  q.Ended(kThumb, 20);
  read = q.StartRead();
  q.Ended(kProxy, 30);  // a failed fetch, ended while the read ran
  ASSERT_TRUE(q.SetUsage(read, {Usage(kThumb, 100, 170)}));
  EXPECT_EQ(q.UsedOf(kThumb), 270u);
  EXPECT_EQ(q.UsedOf(kProxy), 30u);
  EXPECT_EQ(q.Used(), 300u);
  // Overcounted (never registered) for one read at most.
  ASSERT_TRUE(q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 170)}));
  EXPECT_EQ(q.Used(), 270u);
  EXPECT_EQ(q.admitted(), 0u);
}

// Two refreshes at once: the read started first may be set last; it is
// older, so it changes nothing (the newer one may have dropped bytes of
// fetches the older one missed).
// The overcount (a fetch the read found, ended after the read started)
// counts against admissions, but is not an excess to evict: only what the
// read found is.
TEST(StoreQuotaTest, ExcessOfReadLeavesTheOvercountOut) {
  StoreQuota q(*QuotaConfig::Parse(300, "thumb:250"));
  q.SetUsage(q.StartRead(), {Usage(kThumb, 100, 0)});
  q.Admitted(kThumb, 150);
  uint64_t read = q.StartRead();
  q.Ended(kThumb, 150);  // registered before the read got to the database
  ASSERT_TRUE(q.SetUsage(read, {Usage(kThumb, 100, 150)}));
  EXPECT_EQ(q.Used(), 400u);
  EXPECT_EQ(q.NeedFor(kThumb, 0).total, 100u);
  EXPECT_TRUE(q.ExcessOfRead(kThumb).none());
  EXPECT_TRUE(q.ExcessOfRead(v1::SIDECAR_KIND_UNSPECIFIED).none());
  // A real excess: the application registered more, evictions applied.
  ASSERT_TRUE(q.SetUsage(q.StartRead(),
                         {Usage(kThumb, 100, 200), Usage(kProxy, 50, 0)}));
  EXPECT_EQ(q.ExcessOfRead(kThumb).of_kind, 50u);
  EXPECT_EQ(q.ExcessOfRead(kThumb).total, 50u);
  EXPECT_EQ(q.ExcessOfRead(kProxy).of_kind, 0u);
  q.Evicted(kThumb, 1, 50);
  EXPECT_TRUE(q.ExcessOfRead(kThumb).none());
}

TEST(StoreQuotaTest, AnOlderReadSetLastIsIgnored) {
  StoreQuota q(*QuotaConfig::Parse(1000, ""));
  q.Admitted(kThumb, 40);
  uint64_t older = q.StartRead();
  q.Ended(kThumb, 40);
  uint64_t newer = q.StartRead();
  ASSERT_TRUE(q.SetUsage(newer, {Usage(kThumb, 0, 40)}));
  EXPECT_EQ(q.Used(), 40u);
  EXPECT_FALSE(q.SetUsage(older, {}));
  EXPECT_EQ(q.Used(), 40u);
  EXPECT_FALSE(q.SetUsage(newer, {}));
  EXPECT_EQ(q.Used(), 40u);
}

EvictionCandidate Cand(uint8_t n, uint64_t size, Kind kind = kThumb) {
  EvictionCandidate c;
  c.key.content = Uuid::Random();
  c.key.kind = kind;
  c.key.variant = "grid@2x";
  c.key.format =
      kind == kProxy ? v1::SIDECAR_FORMAT_MP4 : v1::SIDECAR_FORMAT_WEBP;
  c.size = size;
  c.sha256[0] = n;
  return c;
}

TEST(ChooseEvictionsTest, OldestFirstSkippingLastCopiesUntilEnough) {
  std::vector<EvictionCandidate> c = {Cand(0, 10), Cand(1, 20), Cand(2, 30),
                                      Cand(3, 40), Cand(4, 50)};
  std::vector<int> holders = {1, 0, 2, 1, 1};
  EXPECT_EQ(ChooseEvictions(c, holders, 35, false),
            (std::vector<size_t>{0, 2}));
  EXPECT_EQ(ChooseEvictions(c, holders, 41, false),
            (std::vector<size_t>{0, 2, 3}));
  EXPECT_EQ(ChooseEvictions(c, holders, 1000, false),
            (std::vector<size_t>{0, 2, 3, 4}));
  EXPECT_EQ(ChooseEvictions(c, holders, 25, true), (std::vector<size_t>{0, 1}));
  EXPECT_TRUE(ChooseEvictions(c, holders, 0, false).empty());
  EXPECT_TRUE(ChooseEvictions(c, {0, 0, 0, 0, 0}, 10, false).empty());
}

// The availability service as the Evictor sees it: fetched sidecars in LRU
// order, other holders per key, and a log of what was called when.
class FakeBackend : public Evictor::Backend {
 public:
  struct Item {
    EvictionCandidate c;
    bool fetched = true;
    int others = 1;
  };
  std::vector<Item> items;  // least recently used first
  std::vector<std::string> calls;
  std::string root;
  bool fail_remove = false;
  bool crash_after_remove = false;  // Remove works, then an error
  // Runs in LocalUsage after the usage was read, before it is returned.
  std::function<void()> after_usage_read;
  // Runs in Remove after the sidecars were withdrawn, before it returns.
  std::function<void()> after_remove;

  absl::StatusOr<std::vector<v1::KindUsage>> LocalUsage() override {
    std::vector<v1::KindUsage> out = ReadUsage();
    if (after_usage_read) after_usage_read();
    return out;
  }
  std::vector<v1::KindUsage> ReadUsage() const {
    std::map<Kind, v1::KindUsage> m;
    for (const Item& i : items) {
      v1::KindUsage& u = m[i.c.key.kind];
      u.set_kind(i.c.key.kind);
      if (i.fetched) {
        u.set_fetched_bytes(u.fetched_bytes() + i.c.size);
        u.set_fetched_count(u.fetched_count() + 1);
      } else {
        u.set_own_bytes(u.own_bytes() + i.c.size);
        u.set_own_count(u.own_count() + 1);
      }
    }
    std::vector<v1::KindUsage> out;
    for (auto& [k, u] : m) out.push_back(u);
    return out;
  }
  absl::StatusOr<std::vector<EvictionCandidate>> ListEvictable(
      Kind kind, uint32_t limit) override {
    std::vector<EvictionCandidate> out;
    for (const Item& i : items) {
      if (!i.fetched) continue;
      if (kind != v1::SIDECAR_KIND_UNSPECIFIED && i.c.key.kind != kind) {
        continue;
      }
      if (out.size() < limit) out.push_back(i.c);
    }
    return out;
  }
  absl::StatusOr<std::vector<int>> OnlineOtherHolders(
      absl::Span<const EvictionCandidate> cands) override {
    std::vector<int> out;
    for (const EvictionCandidate& c : cands) {
      for (const Item& i : items) {
        if (i.c.key == c.key) out.push_back(i.others);
      }
    }
    return out;
  }
  absl::StatusOr<uint32_t> Remove(absl::Span<const SidecarKey> keys) override {
    // Withdrawn while every file is still there: the journal is written.
    bool journaled = !std::filesystem::is_empty(root + "/.evicting");
    bool files_there = true;
    for (const SidecarKey& k : keys) {
      files_there &= std::filesystem::exists(root + "/" + RelativePath(k));
    }
    calls.push_back(absl::StrCat("remove ", keys.size(),
                                 journaled ? " journaled" : " NOT journaled",
                                 files_there ? " files-there" : " files-gone"));
    if (fail_remove) return absl::UnavailableError("availability is away");
    uint32_t n = 0;
    for (const SidecarKey& k : keys) {
      n += std::erase_if(items, [&](const Item& i) { return i.c.key == k; });
    }
    if (crash_after_remove) return absl::UnavailableError("deadline exceeded");
    if (after_remove) after_remove();
    return n;
  }
  absl::StatusOr<std::vector<bool>> ReadyLocally(
      absl::Span<const SidecarKey> keys) override {
    std::vector<bool> out;
    for (const SidecarKey& k : keys) {
      bool ready = false;
      for (const Item& i : items) ready |= i.c.key == k;
      out.push_back(ready);
    }
    return out;
  }
};

class EvictorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        std::filesystem::temp_directory_path() / "evictor_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    backend_.root = root_;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // A sidecar with its file on disk.
  FakeBackend::Item& Add(uint64_t size, bool fetched, int others,
                         Kind kind = kThumb) {
    FakeBackend::Item i{
        Cand(static_cast<uint8_t>(backend_.items.size()), size, kind), fetched,
        others};
    std::string path = File(i.c.key);
    std::filesystem::create_directories(
        std::filesystem::path(path).parent_path());
    std::ofstream(path) << std::string(size, 'x');
    backend_.items.push_back(i);
    return backend_.items.back();
  }
  std::string File(const SidecarKey& k) {
    return root_ + "/" + RelativePath(k);
  }
  std::unique_ptr<Evictor> Make(uint64_t total, const std::string& kinds = "") {
    Evictor::Options o;
    o.root = root_;
    o.quota = *QuotaConfig::Parse(total, kinds);
    return std::make_unique<Evictor>(o, &backend_);
  }

  std::string root_;
  FakeBackend backend_;
};

TEST_F(EvictorTest, EvictsLeastRecentlyUsedFetchedHeldElsewhereOnly) {
  SidecarKey own = Add(100, /*fetched=*/false, 1).c.key;
  SidecarKey last_copy = Add(100, true, /*others=*/0).c.key;
  SidecarKey old1 = Add(100, true, 1).c.key;
  SidecarKey old2 = Add(100, true, 2).c.key;
  SidecarKey recent = Add(100, true, 1).c.key;
  std::unique_ptr<Evictor> e = Make(350);
  ASSERT_TRUE(e->Refresh().ok());
  absl::StatusOr<Evictor::Result> r = e->EnforceQuota();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->evicted, 2u);
  EXPECT_EQ(r->bytes, 200u);
  EXPECT_EQ(r->kept_last_copies, 1u);
  EXPECT_TRUE(std::filesystem::exists(File(own)));
  EXPECT_TRUE(std::filesystem::exists(File(last_copy)));
  EXPECT_FALSE(std::filesystem::exists(File(old1)));
  EXPECT_FALSE(std::filesystem::exists(File(old2)));
  EXPECT_TRUE(std::filesystem::exists(File(recent)));
  ASSERT_EQ(backend_.calls.size(), 1u);
  EXPECT_EQ(backend_.calls[0], "remove 2 journaled files-there");
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/.evicting"));
  v1::GetStoreUsageResponse rep = e->Report();
  EXPECT_EQ(rep.used_bytes(), 300u);
  EXPECT_EQ(rep.pinned_bytes(), 100u);
  EXPECT_EQ(rep.evictable_bytes(), 200u);
  EXPECT_EQ(rep.evicted_count(), 2u);
  EXPECT_EQ(rep.quota_bytes(), 350u);
}

TEST_F(EvictorTest, PrefetchIsRefusedInteractiveMakesRoom) {
  Add(100, false, 1);
  SidecarKey old = Add(100, true, 1).c.key;
  std::unique_ptr<Evictor> e = Make(250);
  absl::Status s = e->Admit(v1::PRIORITY_PREFETCH, kThumb, 100).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("store quota of 250 B reached (200 B used"),
            std::string::npos)
      << s;
  EXPECT_TRUE(std::filesystem::exists(File(old)));
  absl::StatusOr<Evictor::Admission> fifty =
      e->Admit(v1::PRIORITY_PREFETCH, kThumb, 50);
  EXPECT_TRUE(fifty.ok());
  // 250 of 250 now (with the 50 admitted): an interactive 100 evicts.
  EXPECT_TRUE(e->Admit(v1::PRIORITY_INTERACTIVE, kThumb, 100).ok());
  EXPECT_FALSE(std::filesystem::exists(File(old)));
  EXPECT_EQ(e->Report().evicted_count(), 1u);
}

// The old interleaving, through the Evictor: a fetch admitted before a
// usage refresh whose read misses it (its sidecar is not registered yet)
// stays counted, so the next prefetch that would pass the quota is refused.
TEST_F(EvictorTest, AFetchRunningDuringARefreshStaysCounted) {
  Add(100, /*fetched=*/false, 1);
  std::unique_ptr<Evictor> e = Make(300);
  ASSERT_TRUE(e->Refresh().ok());
  absl::StatusOr<Evictor::Admission> running =
      e->Admit(v1::PRIORITY_PREFETCH, kThumb, 150);
  ASSERT_TRUE(running.ok()) << running.status();
  ASSERT_TRUE(e->Refresh().ok());  // the background refresh
  EXPECT_EQ(e->Report().used_bytes(), 250u);
  absl::StatusOr<Evictor::Admission> next =
      e->Admit(v1::PRIORITY_PREFETCH, kThumb, 100);
  EXPECT_EQ(next.status().code(), absl::StatusCode::kResourceExhausted)
      << "admitted 100 with 100 + 150 of 300 in use";
  EXPECT_TRUE(e->Admit(v1::PRIORITY_PREFETCH, kThumb, 50).ok());
}

// A fetch registers its sidecar and ends while a refresh reads the usage,
// after the read got to the database: its bytes count until the next
// refresh, which has them; then they count once.
TEST_F(EvictorTest, AFetchEndingDuringARefreshCountsUntilTheNextOne) {
  Add(100, /*fetched=*/false, 1);
  std::unique_ptr<Evictor> e = Make(300);
  ASSERT_TRUE(e->Refresh().ok());
  absl::StatusOr<Evictor::Admission> fetch =
      e->Admit(v1::PRIORITY_NORMAL, kThumb, 150);
  ASSERT_TRUE(fetch.ok()) << fetch.status();
  backend_.after_usage_read = [&] {
    Add(150, /*fetched=*/true, 1);  // registered
    fetch->Release();
  };
  ASSERT_TRUE(e->Refresh().ok());
  backend_.after_usage_read = nullptr;
  EXPECT_EQ(e->Report().used_bytes(), 250u);
  EXPECT_EQ(e->Admit(v1::PRIORITY_PREFETCH, kThumb, 51).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(e->Refresh().ok());
  EXPECT_EQ(e->Report().used_bytes(), 250u);
  EXPECT_EQ(e->Report().evictable_bytes(), 150u);
  EXPECT_TRUE(e->Admit(v1::PRIORITY_PREFETCH, kThumb, 50).ok());
}

// The background enforcement does not evict for that overcount: a store
// exactly at its quota, with a fetch counted twice until the next read,
// keeps every sidecar. (It evicted one, in a transfer_fetch_test run.)
TEST_F(EvictorTest, TheOvercountOfARefreshEvictsNothing) {
  Add(100, /*fetched=*/false, 1);
  SidecarKey older = Add(100, /*fetched=*/true, 1).c.key;
  std::unique_ptr<Evictor> e = Make(300);
  ASSERT_TRUE(e->Refresh().ok());
  absl::StatusOr<Evictor::Admission> fetch =
      e->Admit(v1::PRIORITY_NORMAL, kThumb, 100);
  ASSERT_TRUE(fetch.ok()) << fetch.status();
  SidecarKey fetched = Add(100, /*fetched=*/true, 1).c.key;  // registered
  backend_.after_usage_read = [&] { fetch->Release(); };
  ASSERT_TRUE(e->Refresh().ok());  // found it, and it ended meanwhile
  backend_.after_usage_read = nullptr;
  ASSERT_EQ(e->Report().used_bytes(), 400u) << "the overcount is gone";
  absl::StatusOr<Evictor::Result> r = e->EnforceQuota();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->evicted, 0u);
  EXPECT_TRUE(std::filesystem::exists(File(older)));
  EXPECT_TRUE(std::filesystem::exists(File(fetched)));
  ASSERT_TRUE(e->Refresh().ok());
  EXPECT_EQ(e->Report().used_bytes(), 300u);
  EXPECT_EQ(e->Report().evicted_count(), 0u);
}

// A fetch ends while a refresh reads the usage, after the read found its
// sidecar: it counts twice until the next read. A fetch admitted in that
// window reads the usage again before it evicts or is refused. (The next
// interactive fetch evicted the one just fetched, though both fitted, in a
// transfer_fetch_test run.)
TEST_F(EvictorTest, AFetchCountedTwiceIsCountedAgainBeforeAnEviction) {
  for (v1::Priority next : {v1::PRIORITY_INTERACTIVE, v1::PRIORITY_PREFETCH}) {
    SCOPED_TRACE(v1::Priority_Name(next));
    backend_.items.clear();
    Add(100, /*fetched=*/false, 1);
    std::unique_ptr<Evictor> e = Make(300);
    ASSERT_TRUE(e->Refresh().ok());
    absl::StatusOr<Evictor::Admission> first =
        e->Admit(v1::PRIORITY_INTERACTIVE, kThumb, 100);
    ASSERT_TRUE(first.ok()) << first.status();
    SidecarKey t0 = Add(100, /*fetched=*/true, 1).c.key;  // registered
    backend_.after_usage_read = [&] { first->Release(); };
    ASSERT_TRUE(e->Refresh().ok());  // found t0, and it ended meanwhile
    backend_.after_usage_read = nullptr;
    ASSERT_EQ(e->Report().used_bytes(), 300u) << "no overcount to test";

    // 200 in use: 100 more fit exactly.
    absl::StatusOr<Evictor::Admission> second = e->Admit(next, kThumb, 100);
    ASSERT_TRUE(second.ok()) << second.status();
    EXPECT_TRUE(std::filesystem::exists(File(t0)));
    EXPECT_EQ(e->Report().evicted_count(), 0u);
    EXPECT_EQ(e->Report().used_bytes(), 300u);
    EXPECT_TRUE(backend_.calls.empty());
    // And the quota still holds: nothing more gets in without evicting.
    EXPECT_EQ(e->Admit(v1::PRIORITY_PREFETCH, kThumb, 1).status().code(),
              absl::StatusCode::kResourceExhausted);
  }
}

// A background refresh reads the usage while an interactive fetch's
// eviction is between withdrawing its sidecar and taking its bytes off the
// usage: it waits for the eviction, so the evicted bytes come off once.
// (Without the wait the read missed them, the eviction took them off again,
// and a store at its quota looked 100 under it: a prefetch got in.)
TEST_F(EvictorTest, ARefreshDuringAnEvictionTakesTheEvictedBytesOffOnce) {
  Add(100, /*fetched=*/false, 1);
  SidecarKey old = Add(100, /*fetched=*/true, 1).c.key;
  Add(100, /*fetched=*/true, 1);
  std::unique_ptr<Evictor> e = Make(300);
  ASSERT_TRUE(e->Refresh().ok());
  std::thread background;
  absl::Notification read;
  backend_.after_remove = [&] {
    background = std::thread([&] {
      EXPECT_TRUE(e->Refresh().ok());
      read.Notify();
    });
    // Time for a refresh that does not wait to finish here.
    read.WaitForNotificationWithTimeout(absl::Milliseconds(300));
  };
  absl::StatusOr<Evictor::Admission> fetch =
      e->Admit(v1::PRIORITY_INTERACTIVE, kThumb, 100);
  ASSERT_TRUE(fetch.ok()) << fetch.status();
  backend_.after_remove = nullptr;
  ASSERT_TRUE(background.joinable());
  background.join();
  EXPECT_FALSE(std::filesystem::exists(File(old)));
  // 200 registered and the 100 admitted: at the quota.
  EXPECT_EQ(e->Report().used_bytes(), 300u);
  EXPECT_EQ(e->Admit(v1::PRIORITY_PREFETCH, kThumb, 100).status().code(),
            absl::StatusCode::kResourceExhausted)
      << "a prefetch got in with the store at its quota";
}

// Released bytes stop counting at the next refresh: those of a fetch that
// registered its sidecar are in the usage then, those of one that failed
// are nowhere. A moved Admission releases once.
TEST_F(EvictorTest, ReleasedBytesStopCountingAtTheNextRefresh) {
  std::unique_ptr<Evictor> e = Make(1000);
  ASSERT_TRUE(e->Refresh().ok());
  absl::StatusOr<Evictor::Admission> done =
      e->Admit(v1::PRIORITY_NORMAL, kThumb, 200);
  absl::StatusOr<Evictor::Admission> failed =
      e->Admit(v1::PRIORITY_NORMAL, kProxy, 300);
  ASSERT_TRUE(done.ok() && failed.ok());
  EXPECT_EQ(e->Report().used_bytes(), 500u);
  Add(200, /*fetched=*/true, 1);
  done->Release();
  done->Release();  // idempotent
  {
    Evictor::Admission moved = std::move(*failed);
    Evictor::Admission again;
    again = std::move(moved);
  }  // released here, once
  // Until a refresh, both still count (the usage read before them ended).
  EXPECT_EQ(e->Report().used_bytes(), 500u);
  ASSERT_TRUE(e->Refresh().ok());
  EXPECT_EQ(e->Report().used_bytes(), 200u);
  ASSERT_TRUE(e->Refresh().ok());
  EXPECT_EQ(e->Report().used_bytes(), 200u);
}

// Fetches start and end while refreshes run (for ThreadSanitizer, and the
// count): once all have ended, a refresh leaves only the usage read.
TEST_F(EvictorTest, AdmissionsAndRefreshesAtOnceLeaveNothingBehind) {
  Add(100, /*fetched=*/false, 1);
  std::unique_ptr<Evictor> e = Make(1ull << 40);
  std::atomic<bool> done{false};
  std::thread refresher([&] {
    while (!done) EXPECT_TRUE(e->Refresh().ok());
  });
  std::vector<std::thread> fetchers;
  for (int t = 0; t < 4; ++t) {
    fetchers.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        absl::StatusOr<Evictor::Admission> a =
            e->Admit(t % 2 ? v1::PRIORITY_PREFETCH : v1::PRIORITY_NORMAL,
                     t % 2 ? kThumb : kProxy, 1 + i % 7);
        ASSERT_TRUE(a.ok()) << a.status();
      }
    });
  }
  for (std::thread& f : fetchers) f.join();
  done = true;
  refresher.join();
  ASSERT_TRUE(e->Refresh().ok());
  EXPECT_EQ(e->Report().used_bytes(), 100u);
}

TEST_F(EvictorTest, KindQuotaEvictsOnlyThatKind) {
  SidecarKey proxy = Add(500, true, 1, kProxy).c.key;
  SidecarKey t1 = Add(100, true, 1).c.key;
  SidecarKey t2 = Add(100, true, 1).c.key;
  std::unique_ptr<Evictor> e = Make(0, "thumb:150");
  ASSERT_TRUE(e->Refresh().ok());
  ASSERT_TRUE(e->EnforceQuota().ok());
  EXPECT_TRUE(std::filesystem::exists(File(proxy)));
  EXPECT_FALSE(std::filesystem::exists(File(t1)));
  EXPECT_TRUE(std::filesystem::exists(File(t2)));
}

TEST_F(EvictorTest, FailedWithdrawDeletesNothing) {
  SidecarKey k = Add(100, true, 1).c.key;
  backend_.fail_remove = true;
  std::unique_ptr<Evictor> e = Make(50);
  ASSERT_TRUE(e->Refresh().ok());
  EXPECT_FALSE(e->EnforceQuota().ok());
  EXPECT_TRUE(std::filesystem::exists(File(k)));
  // The journal stays; at the next start the sidecar is still registered,
  // so its file stays too.
  EXPECT_FALSE(std::filesystem::is_empty(root_ + "/.evicting"));
  backend_.fail_remove = false;
  absl::StatusOr<uint64_t> n = Make(50)->Recover();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u);
  EXPECT_TRUE(std::filesystem::exists(File(k)));
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/.evicting"));
}

TEST_F(EvictorTest, CrashBetweenWithdrawAndDeleteLeavesAnOrphanRecoverDeletes) {
  SidecarKey k = Add(100, true, 1).c.key;
  SidecarKey kept = Add(100, true, 1).c.key;
  backend_.crash_after_remove = true;  // withdrawn, then "the process died"
  std::unique_ptr<Evictor> e = Make(150);
  ASSERT_TRUE(e->Refresh().ok());
  EXPECT_FALSE(e->EnforceQuota().ok());
  // Withdrawn (no longer advertised) but its file is still there: an orphan,
  // never the other way round.
  EXPECT_FALSE(*backend_.ReadyLocally({k}).value().begin());
  EXPECT_TRUE(std::filesystem::exists(File(k)));
  backend_.crash_after_remove = false;
  absl::StatusOr<uint64_t> n = Make(150)->Recover();
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 1u);
  EXPECT_FALSE(std::filesystem::exists(File(k)));
  EXPECT_TRUE(std::filesystem::exists(File(kept)));
  EXPECT_TRUE(std::filesystem::is_empty(root_ + "/.evicting"));
}

}  // namespace
}  // namespace sidecar::transfer
