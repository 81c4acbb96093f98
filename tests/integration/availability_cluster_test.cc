// Three devices A, B, C on loopback, each a real sidecar-availability process
// with its own database on a real PostgreSQL: A <-> B <-> C, where A and C
// never talk. The seed's test_cross_device_sidecar_availability, in spirit.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/pg/connection.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/transport.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "services/availability/self_snapshot.h"
#include "tests/support/availability_process.h"
#include "tests/support/pg_test.h"
#include "tests/support/prometheus_text.h"
#include "tests/support/test_data.h"
#include "tests/support/test_peer.h"
#include "tests/support/wait.h"

namespace sidecar::testing {
namespace {

using v1::ResolveResponse;

struct Sidecar {
  v1::SidecarKey key;
  std::string bytes;
};

Sidecar MakeSidecar(int i, const char* variant = "grid@2x") {
  Sidecar s;
  s.key.set_content_uuid(Uuid::Random().ToString());
  s.key.set_kind(v1::SIDECAR_KIND_THUMB);
  s.key.set_variant(variant);
  s.key.set_format(v1::SIDECAR_FORMAT_WEBP);
  s.bytes = absl::StrCat("RIFF....WEBPVP8L thumbnail ", i, " ",
                         std::string(1000 + i, 'x'));
  return s;
}

class ClusterTest : public ::sidecar::testing::ProcessTest {
 public:  // for ForkAndHeal
  void TearDown() override {
    devices_.clear();  // stops the processes first
    ProcessTest::TearDown();
  }

  AvailabilityProcess* AddDevice(const std::string& name,
                                 std::map<std::string, std::string> flags) {
    flags.emplace("ping_interval", "200ms");
    flags.emplace("offline_after", "1s");
    flags.emplace("prompt_delay", "100ms");
    flags.emplace("leaf_prompt_delay", "100ms");
    flags.emplace("gossip_interval", "5m");  // prompt rounds must do the work
    flags.emplace("rpc_timeout", "1s");
    flags.emplace("verbose", "true");
    flags.emplace("transfer_address", TransferAddressOf(name));
    auto p = AvailabilityProcess::Create(
        AVAILABILITY_BIN, server_, dir_,
        {absl::StrCat(
             name, "_",
             ::testing::UnitTest::GetInstance()->current_test_info()->name()),
         {},
         flags});
    EXPECT_TRUE(p.ok()) << p.status();
    devices_.push_back(std::move(*p));
    return devices_.back().get();
  }

  // A <-> B <-> C: A and C each paired with B only (they joined B's
  // library), and do not contact members they did not pair with.
  void StartLine(bool c_contacts_learned = false) {
    a_ = AddDevice("a", {{"contact_learned_peers", "false"}});
    b_ = AddDevice("b", {});
    c_ = AddDevice("c", {{"contact_learned_peers",
                          c_contacts_learned ? "true" : "false"}});
    for (auto* d : {a_, b_, c_}) ASSERT_TRUE(d->Start().ok()) << d->log_path();
    ASSERT_EQ(Pair(b_, a_), absl::OkStatus());
    ASSERT_EQ(Pair(b_, c_), absl::OkStatus());
    a_id_ = DeviceId(a_);
    b_id_ = DeviceId(b_);
    c_id_ = DeviceId(c_);
  }

  // The metrics of a device started with --metrics_port_file=`port_file`,
  // as Prometheus reads them.
  static std::string Scrape(const std::string& port_file) {
    int port = 0;
    EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadAll(port_file)),
                                 &port));
    absl::StatusOr<std::string> text = testing::HttpGet(port, "/metrics");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : std::string();
  }

  // The transfer address each device advertises (no transfer service runs).
  static std::string TransferAddressOf(const std::string& name) {
    return absl::StrCat(name, "-transfer.invalid:7200");
  }

  std::string DeviceId(AvailabilityProcess* d) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::DeviceInfo info;
    grpc::Status s = d->api()->GetDevice(&ctx, {}, &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return info.device_id();
  }

  // Writes the file under the device's root and registers it READY.
  void Publish(AvailabilityProcess* d, const std::vector<Sidecar>& sidecars,
               const std::string& generator_version = "test-1") {
    v1::RegisterRequest req;
    for (const Sidecar& s : sidecars) {
      auto key = KeyFromProto(s.key);
      ASSERT_TRUE(key.ok());
      std::filesystem::path path =
          std::filesystem::path(d->sidecar_root()) / RelativePath(*key);
      std::filesystem::create_directories(path.parent_path());
      std::ofstream(path, std::ios::binary) << s.bytes;
      v1::LocalSidecar* l = req.add_sidecars();
      *l->mutable_key() = s.key;
      l->set_size(s.bytes.size());
      l->set_sha256(std::string(DigestBytes(Sha256Of(s.bytes))));
      l->set_status(v1::SIDECAR_STATUS_READY);
      l->set_generator_version(generator_version);
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    v1::RegisterResponse resp;
    grpc::Status st = d->api()->Register(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    EXPECT_EQ(resp.registered(), sidecars.size());
  }

  v1::WhoHasResponse WhoHas(AvailabilityProcess* d,
                            const std::vector<Sidecar>& sidecars) {
    v1::WhoHasRequest req;
    for (const Sidecar& s : sidecars) *req.add_keys() = s.key;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::WhoHasResponse resp;
    grpc::Status st = d->api()->WhoHas(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  // Device ids holding key i, per the response.
  static std::vector<std::string> Holders(const v1::WhoHasResponse& r, int i) {
    std::vector<std::string> out;
    if (i >= r.results_size()) return out;
    for (const auto& h : r.results(i).holders()) {
      out.push_back(r.devices(h.device()).device_id());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  bool AllHeldBy(AvailabilityProcess* d, const std::vector<Sidecar>& s,
                 const std::string& id) {
    v1::WhoHasResponse r = WhoHas(d, s);
    for (size_t i = 0; i < s.size(); ++i) {
      auto h = Holders(r, i);
      if (std::find(h.begin(), h.end(), id) == h.end()) return false;
    }
    return true;
  }

  ResolveResponse Resolve(
      AvailabilityProcess* d, const v1::SidecarKey& key,
      v1::ResolveMode mode = v1::RESOLVE_MODE_FETCH_OR_GENERATE) {
    v1::ResolveRequest req;
    *req.mutable_key() = key;
    req.set_mode(mode);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    ResolveResponse resp;
    grpc::Status st = d->api()->Resolve(&ctx, req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  std::optional<v1::PeerInfo> PeerEntry(AvailabilityProcess* d,
                                        const std::string& id) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::ListPeersResponse resp;
    if (!d->api()->ListPeers(&ctx, {}, &resp).ok()) return std::nullopt;
    for (const auto& p : resp.peers()) {
      if (p.device_id() == id) return p;
    }
    return std::nullopt;
  }

  // Whether `d` comes to list device `id` as online within 5 s.
  bool WaitOnline(AvailabilityProcess* d, const std::string& id) {
    return WaitFor(
               [&] {
                 auto p = PeerEntry(d, id);
                 return p && p->online();
               },
               absl::Seconds(5))
        .has_value();
  }

  std::vector<std::unique_ptr<AvailabilityProcess>> devices_;
  AvailabilityProcess *a_ = nullptr, *b_ = nullptr, *c_ = nullptr;
  std::string a_id_, b_id_, c_id_;
};

TEST_F(ClusterTest, UpdatesSpreadPromptlyAndTransitively) {
  StartLine();
  std::vector<Sidecar> s = {MakeSidecar(1), MakeSidecar(2),
                            MakeSidecar(3, "detail@2x")};
  // Let the first rounds (at start-up) settle so the next ones are prompt
  // rounds caused by the registration, not start-up catch-up.
  absl::SleepFor(absl::Milliseconds(500));
  Publish(a_, s);

  // B learns within one prompt round (prompt_delay 100 ms; the periodic
  // round is 5 minutes away).
  auto b_time =
      WaitFor([&] { return AllHeldBy(b_, s, a_id_); }, absl::Seconds(3));
  ASSERT_TRUE(b_time.has_value()) << "B never learned A's sidecars";
  // C learns through B alone.
  auto c_time =
      WaitFor([&] { return AllHeldBy(c_, s, a_id_); }, absl::Seconds(3));
  ASSERT_TRUE(c_time.has_value()) << "C never learned A's sidecars via B";
  std::cerr << "B learned after " << *b_time << ", C after " << *c_time << "\n";

  // Exact answers at C: one holder, A, with the right size and checksum.
  v1::WhoHasResponse r = WhoHas(c_, s);
  ASSERT_EQ(r.results_size(), 3);
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(r.results(i).holders_size(), 1);
    const v1::Holder& h = r.results(i).holders(0);
    EXPECT_EQ(r.devices(h.device()).device_id(), a_id_);
    EXPECT_EQ(h.size(), s[i].bytes.size());
    EXPECT_EQ(h.sha256(), std::string(DigestBytes(Sha256Of(s[i].bytes))));
  }
  // A and C never talked: neither lists the other as a peer.
  EXPECT_FALSE(PeerEntry(a_, c_id_).has_value());
  EXPECT_FALSE(PeerEntry(c_, a_id_).has_value());

  // Resolution: A has it locally, B fetches from A, C cannot reach A.
  ResolveResponse at_a = Resolve(a_, s[0].key);
  EXPECT_EQ(at_a.outcome(), ResolveResponse::OUTCOME_LOCAL);
  EXPECT_EQ(at_a.local_path(),
            absl::StrCat(a_->sidecar_root(), "/",
                         RelativePath(*KeyFromProto(s[0].key))));
  ResolveResponse at_b = Resolve(b_, s[0].key);
  ASSERT_EQ(at_b.outcome(), ResolveResponse::OUTCOME_REMOTE) << at_b.reason();
  ASSERT_EQ(at_b.sources_size(), 1);
  EXPECT_EQ(at_b.sources(0).device_id(), a_id_);
  EXPECT_EQ(at_b.sources(0).transfer_address(), TransferAddressOf("a"));
  EXPECT_EQ(at_b.sources(0).sha256(),
            std::string(DigestBytes(Sha256Of(s[0].bytes))));
  ResolveResponse at_c = Resolve(c_, s[0].key);
  EXPECT_EQ(at_c.outcome(), ResolveResponse::OUTCOME_GENERATE);
  EXPECT_NE(at_c.reason().find("offline"), std::string::npos) << at_c.reason();
  EXPECT_EQ(Resolve(c_, s[0].key, v1::RESOLVE_MODE_FETCH_ONLY).outcome(),
            ResolveResponse::OUTCOME_UNAVAILABLE);
  EXPECT_EQ(Resolve(b_, s[0].key, v1::RESOLVE_MODE_LOCAL_ONLY).outcome(),
            ResolveResponse::OUTCOME_GENERATE);
  Sidecar unknown = MakeSidecar(9);
  EXPECT_EQ(Resolve(b_, unknown.key).outcome(),
            ResolveResponse::OUTCOME_GENERATE);

  // A removal spreads the same way.
  {
    v1::RemoveRequest req;
    *req.add_keys() = s[1].key;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::RemoveResponse resp;
    ASSERT_TRUE(a_->api()->Remove(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.removed(), 1u);
  }
  auto gone = WaitFor([&] { return Holders(WhoHas(c_, {s[1]}), 0).empty(); },
                      absl::Seconds(3));
  EXPECT_TRUE(gone.has_value()) << "C still lists A for a removed sidecar";
  EXPECT_EQ(Holders(WhoHas(c_, {s[0]}), 0), std::vector<std::string>{a_id_});
}

// Generator versions travel in gossip, transitively (A's reach C through B,
// under A's signed head); Resolve prefers the newest version, says when the
// local copy is older, and reports holders of one version with different
// bytes.
TEST_F(ClusterTest, GeneratorVersionsRankSourcesAndShowStaleAndConflicts) {
  StartLine();
  absl::SleepFor(absl::Milliseconds(500));
  Sidecar thumb_old = MakeSidecar(1), thumb_new = thumb_old;
  thumb_new.bytes += " regenerated";
  Sidecar ocr_a = MakeSidecar(2), ocr_c = ocr_a;
  ocr_c.bytes += " other bytes";
  Publish(a_, {thumb_old}, "thumbgen 1.2");
  Publish(a_, {ocr_a}, "ocr 3");
  Publish(c_, {thumb_new}, "thumbgen 1.10");
  Publish(c_, {ocr_c}, "ocr 3");
  const std::string sha_old =
      std::string(DigestBytes(Sha256Of(thumb_old.bytes)));
  const std::string sha_new =
      std::string(DigestBytes(Sha256Of(thumb_new.bytes)));

  // B hears of both holders of both keys; C of A's versions through B.
  auto version_of = [](const v1::WhoHasResponse& r, int i,
                       const std::string& id) -> std::string {
    for (const auto& h : r.results(i).holders()) {
      if (r.devices(h.device()).device_id() == id) return h.generator_version();
    }
    return "(not a holder)";
  };
  auto learned = WaitFor(
      [&] {
        v1::WhoHasResponse r = WhoHas(b_, {thumb_old, ocr_a});
        v1::WhoHasResponse rc = WhoHas(c_, {thumb_old});
        return version_of(r, 0, a_id_) == "thumbgen 1.2" &&
               version_of(r, 0, c_id_) == "thumbgen 1.10" &&
               version_of(r, 1, a_id_) == "ocr 3" &&
               version_of(r, 1, c_id_) == "ocr 3" &&
               version_of(rc, 0, a_id_) == "thumbgen 1.2";
      },
      absl::Seconds(5));
  ASSERT_TRUE(learned.has_value()) << "versions did not spread";
  v1::WhoHasResponse r = WhoHas(b_, {thumb_old, ocr_a});
  EXPECT_TRUE(r.results(0).conflicting_versions().empty());
  ASSERT_EQ(r.results(1).conflicting_versions_size(), 1);
  EXPECT_EQ(r.results(1).conflicting_versions(0), "ocr 3");

  // B prefers C, the holder of the newer version, whatever the round trips.
  ResolveResponse at_b = Resolve(b_, thumb_old.key);
  ASSERT_EQ(at_b.outcome(), ResolveResponse::OUTCOME_REMOTE) << at_b.reason();
  ASSERT_EQ(at_b.sources_size(), 2);
  EXPECT_EQ(at_b.sources(0).device_id(), c_id_);
  EXPECT_EQ(at_b.sources(0).generator_version(), "thumbgen 1.10");
  EXPECT_EQ(at_b.sources(0).sha256(), sha_new);
  EXPECT_EQ(at_b.sources(1).generator_version(), "thumbgen 1.2");
  EXPECT_TRUE(at_b.conflicting_versions().empty());

  // The conflict is reported, not resolved silently; sources of one digest
  // are adjacent (one each here).
  ResolveResponse conflict = Resolve(b_, ocr_a.key);
  ASSERT_EQ(conflict.outcome(), ResolveResponse::OUTCOME_REMOTE);
  ASSERT_EQ(conflict.conflicting_versions_size(), 1);
  EXPECT_EQ(conflict.conflicting_versions(0), "ocr 3");
  EXPECT_NE(conflict.reason().find("disagree"), std::string::npos)
      << conflict.reason();
  ASSERT_EQ(conflict.sources_size(), 2);
  EXPECT_NE(conflict.sources(0).sha256(), conflict.sources(1).sha256());

  // A's own copy is older than C's, which A learned through B: stale, with
  // the newer source (B relays; A does not contact C, so C is offline to A:
  // stale all the same, with no source online).
  ASSERT_TRUE(WaitFor(
                  [&] {
                    return version_of(WhoHas(a_, {thumb_old}), 0, c_id_) ==
                           "thumbgen 1.10";
                  },
                  absl::Seconds(5))
                  .has_value())
      << "A never learned C's version through B";
  ResolveResponse at_a = Resolve(a_, thumb_old.key);
  ASSERT_EQ(at_a.outcome(), ResolveResponse::OUTCOME_LOCAL) << at_a.reason();
  EXPECT_EQ(at_a.generator_version(), "thumbgen 1.2");
  EXPECT_TRUE(at_a.stale()) << at_a.reason();
  EXPECT_NE(at_a.reason().find("thumbgen 1.10"), std::string::npos)
      << at_a.reason();
  // B registers the old version too: LOCAL and stale, C as the source.
  Publish(b_, {thumb_old}, "thumbgen 1.2");
  ResolveResponse b_local = Resolve(b_, thumb_old.key);
  ASSERT_EQ(b_local.outcome(), ResolveResponse::OUTCOME_LOCAL);
  EXPECT_TRUE(b_local.stale());
  ASSERT_EQ(b_local.sources_size(), 1);
  EXPECT_EQ(b_local.sources(0).device_id(), c_id_);
  // C holds the newest: LOCAL, not stale.
  ResolveResponse c_local = Resolve(c_, thumb_old.key);
  ASSERT_EQ(c_local.outcome(), ResolveResponse::OUTCOME_LOCAL);
  EXPECT_FALSE(c_local.stale()) << c_local.reason();
  // Once B regenerates with the new version it is no longer stale.
  Publish(b_, {thumb_new}, "thumbgen 1.10");
  b_local = Resolve(b_, thumb_old.key);
  EXPECT_FALSE(b_local.stale()) << b_local.reason();
  EXPECT_EQ(b_local.generator_version(), "thumbgen 1.10");
  EXPECT_EQ(b_local.sha256(), sha_new);
  EXPECT_NE(sha_old, sha_new);
}

// ListMissing pages through what peers hold and this device lacks: each key
// once (however many hold it), only the kinds asked for, in small pages
// whose tokens chain across peers, without what this device has.
TEST_F(ClusterTest, ListMissingPagesThroughWhatPeersHoldAndThisLacks) {
  StartLine();
  std::vector<Sidecar> on_a, on_c, shared;
  for (int i = 0; i < 23; ++i) on_a.push_back(MakeSidecar(100 + i));
  for (int i = 0; i < 17; ++i) on_c.push_back(MakeSidecar(200 + i));
  for (int i = 0; i < 5; ++i) shared.push_back(MakeSidecar(300 + i));
  Sidecar text = MakeSidecar(400);
  text.key.set_kind(v1::SIDECAR_KIND_OCR);
  text.key.set_format(v1::SIDECAR_FORMAT_TEXT);
  std::vector<Sidecar> a_all = on_a, c_all = on_c;
  a_all.insert(a_all.end(), shared.begin(), shared.end());
  c_all.insert(c_all.end(), shared.begin(), shared.end());
  a_all.push_back(text);
  Publish(a_, a_all);
  Publish(c_, c_all);
  // B already has three of A's.
  std::vector<Sidecar> on_b(on_a.begin(), on_a.begin() + 3);
  Publish(b_, on_b);
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, a_all, a_id_); }, absl::Seconds(5)));
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, c_all, c_id_); }, absl::Seconds(5)));

  auto list = [&](std::vector<v1::SidecarKind> kinds, uint32_t page,
                  int* pages) {
    std::vector<std::string> out;
    std::string token;
    *pages = 0;
    do {
      v1::ListMissingRequest req;
      for (auto k : kinds) req.add_kinds(k);
      req.set_page_size(page);
      req.set_page_token(token);
      v1::ListMissingResponse resp;
      grpc::ClientContext ctx;
      SetDeadline(&ctx, absl::Seconds(5));
      grpc::Status st = b_->api()->ListMissing(&ctx, req, &resp);
      EXPECT_TRUE(st.ok()) << st.error_message();
      if (!st.ok()) break;
      EXPECT_LE(resp.keys_size(), static_cast<int>(page));
      for (const auto& k : resp.keys()) {
        out.push_back(FormatSidecarUri(*KeyFromProto(k)));
      }
      token = resp.next_page_token();
      ++*pages;
    } while (!token.empty() && *pages < 100);
    return out;
  };
  std::vector<std::string> want;
  for (const auto* set : {&on_a, &on_c, &shared}) {
    for (const Sidecar& sc : *set) {
      want.push_back(FormatSidecarUri(*KeyFromProto(sc.key)));
    }
  }
  want.erase(want.begin(), want.begin() + 3);  // B's own
  std::sort(want.begin(), want.end());

  int pages = 0;
  std::vector<std::string> got = list({v1::SIDECAR_KIND_THUMB}, 4, &pages);
  EXPECT_GE(pages, 10);  // 42 keys, 4 per page
  std::vector<std::string> sorted = got;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(sorted, want);  // each once, none of B's, no OCR text
  // One big page gives the same.
  got = list({v1::SIDECAR_KIND_THUMB}, 1000, &pages);
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  // All kinds: the OCR text too.
  got = list({}, 1000, &pages);
  EXPECT_EQ(got.size(), want.size() + 1);

  // Bad input.
  auto code = [&](v1::ListMissingRequest req) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::ListMissingResponse resp;
    return b_->api()->ListMissing(&ctx, req, &resp).error_code();
  };
  v1::ListMissingRequest bad;
  bad.set_page_token("not a token");
  EXPECT_EQ(code(bad), grpc::StatusCode::INVALID_ARGUMENT);
  bad = {};
  bad.set_page_size(10001);
  EXPECT_EQ(code(bad), grpc::StatusCode::INVALID_ARGUMENT);
  bad = {};
  bad.add_kinds(static_cast<v1::SidecarKind>(99));
  EXPECT_EQ(code(bad), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(ClusterTest, LearnedDeviceIsContactedAndOffered) {
  StartLine(/*c_contacts_learned=*/true);
  std::vector<Sidecar> s = {MakeSidecar(1)};
  Publish(a_, s);
  // C learns of A through B, then contacts A at its advertised address.
  auto t = WaitFor(
      [&] {
        ResolveResponse r = Resolve(c_, s[0].key);
        return r.outcome() == ResolveResponse::OUTCOME_REMOTE &&
               r.sources_size() == 1 && r.sources(0).device_id() == a_id_;
      },
      absl::Seconds(5));
  ASSERT_TRUE(t.has_value());
  auto p = PeerEntry(c_, a_id_);
  ASSERT_TRUE(p.has_value());
  EXPECT_FALSE(p->configured());
  EXPECT_TRUE(p->online());
}

TEST_F(ClusterTest, RestartsKeepInventoryAndPeersRelearn) {
  StartLine();
  std::vector<Sidecar> s = {MakeSidecar(1), MakeSidecar(2)};
  Publish(a_, s);
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(c_, s, a_id_); }, absl::Seconds(5)));
  grpc::ClientContext c1;
  v1::DeviceInfo before;
  ASSERT_TRUE(a_->api()->GetDevice(&c1, {}, &before).ok());

  // A restarts (graceful): same identity, same generation, inventory intact.
  EXPECT_EQ(a_->Stop(), 0) << "graceful shutdown should exit 0";
  ASSERT_TRUE(a_->Start().ok());
  grpc::ClientContext c2;
  v1::DeviceInfo after;
  ASSERT_TRUE(a_->api()->GetDevice(&c2, {}, &after).ok());
  EXPECT_EQ(after.device_id(), before.device_id());
  EXPECT_EQ(after.generation(), before.generation());
  EXPECT_EQ(after.max_seq(), before.max_seq());
  EXPECT_EQ(after.local_ready(), 2u);
  EXPECT_EQ(Resolve(a_, s[0].key).outcome(), ResolveResponse::OUTCOME_LOCAL);
  // Peers are not confused: B keeps exactly what it had of A (same
  // generation, no reset), and C too.
  auto pb = PeerEntry(b_, a_id_);
  ASSERT_TRUE(pb.has_value());
  EXPECT_EQ(pb->generation(), before.generation());
  EXPECT_EQ(pb->max_seq(), before.max_seq());
  EXPECT_EQ(pb->sidecars(), 2u);
  EXPECT_EQ(Holders(WhoHas(c_, s), 0), std::vector<std::string>{a_id_});
  // A came back on another port (tests bind port 0) and told B by calling
  // it. (Were B to move too before hearing from A, the two would have no
  // address of each other left.)
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = PeerEntry(b_, a_id_);
        return p && p->online() && p->peer_address() == a_->address();
      },
      absl::Seconds(5)));

  // B restarts hard; its cache is gone and it re-learns from its peers.
  b_->Kill();
  ASSERT_TRUE(b_->Start().ok());
  auto relearn =
      WaitFor([&] { return AllHeldBy(b_, s, a_id_); }, absl::Seconds(5));
  ASSERT_TRUE(relearn.has_value()) << "B did not re-learn after restart";
  std::cerr << "B re-learned after restart in " << *relearn << "\n";
  // A new registration after both restarts still spreads to C.
  std::vector<Sidecar> more = {MakeSidecar(3)};
  Publish(a_, more);
  EXPECT_TRUE(
      WaitFor([&] { return AllHeldBy(c_, more, a_id_); }, absl::Seconds(5)));
}

// A compacts its change log while B is frozen: withdrawn sidecars' tombstones
// go, the floor rises above what B has seen, and B, thawed, takes a snapshot
// and ends with exactly A's state (deltas would leave the withdrawn ones).
TEST_F(ClusterTest, PeerBehindTheCompactionFloorGetsASnapshot) {
  a_ = AddDevice("a", {{"tombstone_retention", "0s"},
                       {"compaction_check_interval", "100ms"}});
  b_ = AddDevice("b", {{"gossip_interval", "1s"}, {"gossip_jitter", "0"}});
  for (auto* d : {a_, b_}) ASSERT_TRUE(d->Start().ok()) << d->log_path();
  ASSERT_EQ(Pair(a_, b_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  std::vector<Sidecar> s;
  for (int i = 0; i < 20; ++i) s.push_back(MakeSidecar(i));
  Publish(a_, s);
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, s, a_id_); }, absl::Seconds(5)));
  auto seen = PeerEntry(b_, a_id_);
  ASSERT_TRUE(seen.has_value());

  ASSERT_EQ(kill(b_->pid(), SIGSTOP), 0);
  // Replaced first, withdrawn last: the tombstones make a compaction due,
  // and it must find every superseded row there. (The other way round, a
  // compaction between the two left the superseded rows for later.)
  std::vector<Sidecar> replaced;
  for (int i = 10; i < 15; ++i) {
    replaced.push_back(s[i]);
    replaced.back().bytes += " v2";
  }
  Publish(a_, replaced);
  v1::RemoveRequest remove;
  for (int i = 0; i < 10; ++i) *remove.add_keys() = s[i].key;
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::RemoveResponse resp;
    ASSERT_TRUE(a_->api()->Remove(&ctx, remove, &resp).ok());
  }
  // A's log keeps one row per live sidecar, and its floor is above B.
  auto conn = pg::Connection::Open(a_->conninfo());
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto compacted = WaitFor(
      [&] {
        auto r = (*conn)->Exec(
            "SELECT (SELECT count(*) FROM change_log), floor_seq "
            "FROM device_identity");
        return r.ok() && *r->GetInt64(0, 0) == 10 &&
               static_cast<uint64_t>(*r->GetInt64(0, 1)) > seen->max_seq();
      },
      absl::Seconds(10));
  kill(b_->pid(), SIGCONT);
  ASSERT_TRUE(compacted.has_value()) << a_->log_path();

  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::DeviceInfo a_info;
  ASSERT_TRUE(a_->api()->GetDevice(&ctx, {}, &a_info).ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = PeerEntry(b_, a_id_);
        return p && p->max_seq() == a_info.max_seq();
      },
      absl::Seconds(10)))
      << b_->log_path();
  auto p = PeerEntry(b_, a_id_);
  EXPECT_EQ(p->sidecars(), 10u);
  EXPECT_EQ(p->generation(), seen->generation());
  v1::WhoHasResponse r = WhoHas(b_, s);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(Holders(r, i), i < 10 ? std::vector<std::string>{}
                                    : std::vector<std::string>{a_id_})
        << i;
  }
  // The replaced ones carry the new checksum.
  v1::WhoHasResponse r2 = WhoHas(b_, replaced);
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(r2.results(i).holders_size(), 1);
    EXPECT_EQ(r2.results(i).holders(0).sha256(),
              std::string(DigestBytes(Sha256Of(replaced[i].bytes))));
  }
  // A restart of A loads the same state: same max seq and floor.
  EXPECT_EQ(a_->Stop(), 0);
  ASSERT_TRUE(a_->Start().ok());
  grpc::ClientContext ctx2;
  // The channel's connection went with the old process: wait for the new.
  ctx2.set_wait_for_ready(true);
  SetDeadline(&ctx2, absl::Seconds(10));
  v1::DeviceInfo again;
  ASSERT_TRUE(a_->api()->GetDevice(&ctx2, {}, &again).ok());
  EXPECT_EQ(again.max_seq(), a_info.max_seq());
  EXPECT_EQ(again.generation(), a_info.generation());
  EXPECT_EQ(again.local_ready(), 10u);
}

TEST_F(ClusterTest, StoppedDeviceGoesOfflineAndComesBack) {
  StartLine();
  std::vector<Sidecar> s = {MakeSidecar(1)};
  Publish(a_, s);
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, s, a_id_); }, absl::Seconds(5)));
  ASSERT_EQ(Resolve(b_, s[0].key).outcome(), ResolveResponse::OUTCOME_REMOTE);

  a_->Kill();
  absl::Time killed = absl::Now();
  auto offline = WaitFor(
      [&] {
        auto p = PeerEntry(b_, a_id_);
        return p.has_value() && !p->online();
      },
      absl::Seconds(5));
  ASSERT_TRUE(offline.has_value()) << "B never marked A offline";
  std::cerr << "B marked A offline " << absl::Now() - killed
            << " after the kill\n";
  // No longer offered as a source; still known as a holder, shown offline.
  ResolveResponse r = Resolve(b_, s[0].key);
  EXPECT_EQ(r.outcome(), ResolveResponse::OUTCOME_GENERATE);
  EXPECT_NE(r.reason().find("offline"), std::string::npos) << r.reason();
  v1::WhoHasResponse w = WhoHas(b_, s);
  ASSERT_EQ(w.results(0).holders_size(), 1);
  EXPECT_FALSE(w.devices(w.results(0).holders(0).device()).online());

  ASSERT_TRUE(a_->Start().ok());
  auto back = WaitFor(
      [&] {
        return Resolve(b_, s[0].key).outcome() ==
               ResolveResponse::OUTCOME_REMOTE;
      },
      absl::Seconds(5));
  EXPECT_TRUE(back.has_value()) << "A never came back at B";
}

TEST_F(ClusterTest, SurvivesPostgresRestart) {
  StartLine();
  std::vector<Sidecar> s = {MakeSidecar(1)};
  Publish(a_, s);
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, s, a_id_); }, absl::Seconds(5)));
  ASSERT_TRUE(server_->Stop().ok());
  // While the database is down, answers come from memory.
  EXPECT_EQ(Resolve(a_, s[0].key).outcome(), ResolveResponse::OUTCOME_LOCAL);
  EXPECT_TRUE(AllHeldBy(b_, s, a_id_));
  ASSERT_TRUE(server_->Restart().ok());
  // Writes work again without restarting the service.
  std::vector<Sidecar> more = {MakeSidecar(2)};
  Publish(a_, more);
  EXPECT_TRUE(
      WaitFor([&] { return AllHeldBy(c_, more, a_id_); }, absl::Seconds(5)));
  // And everything is still there after a service restart on top.
  a_->Stop();
  ASSERT_TRUE(a_->Start().ok());
  EXPECT_EQ(Resolve(a_, more[0].key).outcome(), ResolveResponse::OUTCOME_LOCAL);
  EXPECT_EQ(Resolve(a_, s[0].key).outcome(), ResolveResponse::OUTCOME_LOCAL);
}

TEST_F(ClusterTest, WatchStreamsRemoteChanges) {
  StartLine();
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  v1::WatchRequest req;
  req.set_include_remote(true);
  auto reader = b_->api()->Watch(&ctx, req);
  absl::SleepFor(absl::Milliseconds(300));
  std::vector<Sidecar> s = {MakeSidecar(1)};
  Publish(a_, s);
  v1::AvailabilityEvent ev;
  bool got = false;
  while (reader->Read(&ev)) {
    if (ev.type() == v1::AvailabilityEvent::TYPE_ADDED &&
        ev.device_id() == a_id_) {
      EXPECT_EQ(ev.key().content_uuid(), s[0].key.content_uuid());
      EXPECT_EQ(ev.size(), s[0].bytes.size());
      EXPECT_FALSE(ev.is_local());
      got = true;
      break;
    }
    if (ev.type() == v1::AvailabilityEvent::TYPE_RESET &&
        ev.device_id() == a_id_) {
      // First contact after start: a snapshot; then the delta follows.
      continue;
    }
  }
  EXPECT_TRUE(got);
  ctx.TryCancel();
  reader->Finish();
}

TEST_F(ClusterTest, BadInputIsRejectedClearlyAndHarmlessly) {
  StartLine();
  auto expect_code = [&](v1::RegisterRequest req, grpc::StatusCode code,
                         const char* words) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::RegisterResponse resp;
    grpc::Status st = a_->api()->Register(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), code) << st.error_message();
    EXPECT_NE(st.error_message().find(words), std::string::npos)
        << st.error_message();
  };
  Sidecar good = MakeSidecar(1);
  auto one = [&](std::function<void(v1::LocalSidecar*)> edit) {
    v1::RegisterRequest req;
    v1::LocalSidecar* l = req.add_sidecars();
    *l->mutable_key() = good.key;
    l->set_size(good.bytes.size());
    l->set_sha256(std::string(DigestBytes(Sha256Of(good.bytes))));
    l->set_status(v1::SIDECAR_STATUS_READY);
    edit(l);
    return req;
  };
  expect_code(one([](auto* l) { l->mutable_key()->set_content_uuid("x"); }),
              grpc::StatusCode::INVALID_ARGUMENT, "content_uuid");
  expect_code(one([](auto* l) {
                l->mutable_key()->set_kind(static_cast<v1::SidecarKind>(77));
              }),
              grpc::StatusCode::INVALID_ARGUMENT, "kind");
  expect_code(one([](auto* l) { l->mutable_key()->set_variant("../../x"); }),
              grpc::StatusCode::INVALID_ARGUMENT, "variant");
  expect_code(one([](auto* l) {
                l->mutable_key()->set_variant(std::string("a\0b", 3));
              }),
              grpc::StatusCode::INVALID_ARGUMENT, "control");
  expect_code(one([](auto* l) { l->clear_sha256(); }),
              grpc::StatusCode::INVALID_ARGUMENT, "sha256");
  expect_code(one([](auto* l) { l->set_sha256("short"); }),
              grpc::StatusCode::INVALID_ARGUMENT, "sha256");
  {
    v1::RegisterRequest dup = one([](auto*) {});
    *dup.add_sidecars() = dup.sidecars(0);
    expect_code(dup, grpc::StatusCode::INVALID_ARGUMENT, "twice");
  }
  {
    v1::RegisterRequest big;
    for (int i = 0; i < 10001; ++i) {
      v1::LocalSidecar* l = big.add_sidecars();
      *l->mutable_key() = MakeSidecar(i).key;
      l->set_status(v1::SIDECAR_STATUS_PENDING);
    }
    expect_code(big, grpc::StatusCode::RESOURCE_EXHAUSTED, "at most 10000");
  }
  // WhoHas and ListLocal validate too.
  {
    v1::WhoHasRequest req;
    *req.add_keys() = good.key;
    req.add_keys()->set_content_uuid("nope");
    grpc::ClientContext ctx;
    v1::WhoHasResponse resp;
    grpc::Status st = a_->api()->WhoHas(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(st.error_message().find("keys[1]"), std::string::npos);
  }
  {
    v1::ListLocalRequest req;
    req.set_page_token("garbage");
    grpc::ClientContext ctx;
    v1::ListLocalResponse resp;
    EXPECT_EQ(a_->api()->ListLocal(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // The peer API rejects malformed digests and hellos, even from a member.
  auto member = TestPeer::Create(dir_, "member");
  ASSERT_TRUE(member.ok()) << member.status();
  ASSERT_TRUE((*member)->JoinLibraryOf(a_).ok());
  auto peer_api = (*member)->PeerStub(a_);
  ASSERT_TRUE(peer_api.ok()) << peer_api.status();
  {
    v1::ExchangeRequest req;
    *req.mutable_from() = (*member)->Hello();
    req.add_digest()->set_device_id("short");
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    auto reader = (*peer_api)->Exchange(&ctx, req);
    v1::ExchangeResponse msg;
    while (reader->Read(&msg)) {
    }
    EXPECT_EQ(reader->Finish().error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::ExchangeRequest req;  // no hello at all
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    auto reader = (*peer_api)->Exchange(&ctx, req);
    v1::ExchangeResponse msg;
    while (reader->Read(&msg)) {
    }
    EXPECT_EQ(reader->Finish().error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    v1::HasKeysRequest req;
    *req.add_keys() = good.key;
    req.mutable_keys(0)->set_variant("a/b");
    grpc::ClientContext ctx;
    v1::HasKeysResponse resp;
    SetDeadline(&ctx, absl::Seconds(5));
    EXPECT_EQ((*peer_api)->HasKeys(&ctx, req, &resp).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT);
  }
  // Nothing was stored, nothing crashed, and good input still works.
  ASSERT_TRUE(a_->running());
  grpc::ClientContext ctx;
  v1::DeviceInfo info;
  ASSERT_TRUE(a_->api()->GetDevice(&ctx, {}, &info).ok());
  EXPECT_EQ(info.max_seq(), 0u);
  Publish(a_, {good});
  EXPECT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, {good}, a_id_); }, absl::Seconds(5)));
}

TEST_F(ClusterTest, ChangeLogResetIsToldApartFromAStaleCopy) {
  StartLine();
  std::vector<Sidecar> s = {MakeSidecar(1), MakeSidecar(2), MakeSidecar(3)};
  Publish(a_, s);
  {
    v1::RemoveRequest req;
    *req.add_keys() = s[2].key;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::RemoveResponse resp;
    ASSERT_TRUE(a_->api()->Remove(&ctx, req, &resp).ok());
  }
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = PeerEntry(b_, a_id_);
        return p && p->max_seq() == 4 && AllHeldBy(c_, {s[0], s[1]}, a_id_);
      },
      absl::Seconds(5)));
  uint64_t old_gen = PeerEntry(b_, a_id_)->generation();

  // A compacts its log into a new generation: two entries, seq 1..2.
  a_->Stop();
  std::map<std::string, std::string> flags = {{"reset_change_log", "true"}};
  ASSERT_TRUE(a_->StartWithExtraFlags(flags).ok());
  grpc::ClientContext ctx;
  v1::DeviceInfo info;
  ASSERT_TRUE(a_->api()->GetDevice(&ctx, {}, &info).ok());
  EXPECT_EQ(info.device_id(), a_id_);
  EXPECT_GT(info.generation(), old_gen);
  EXPECT_EQ(info.max_seq(), 2u);

  // B moves to the new generation (a snapshot, since its copy is of an
  // older one) although its max_seq of 4 is above A's new 2.
  auto moved = WaitFor(
      [&] {
        auto p = PeerEntry(b_, a_id_);
        return p && p->generation() == info.generation() && p->max_seq() == 2;
      },
      absl::Seconds(5));
  EXPECT_TRUE(moved.has_value()) << "B kept the stale copy";
  // Answers are the same as before the reset, everywhere.
  for (AvailabilityProcess* d : {b_, c_}) {
    v1::WhoHasResponse r = WhoHas(d, s);
    EXPECT_EQ(Holders(r, 0), std::vector<std::string>{a_id_});
    EXPECT_EQ(Holders(r, 1), std::vector<std::string>{a_id_});
    EXPECT_TRUE(Holders(r, 2).empty());
  }
  // And new changes flow on the new generation, to C through B too (C would
  // refuse deltas of a generation it does not hold).
  std::vector<Sidecar> more = {MakeSidecar(4)};
  Publish(a_, more);
  EXPECT_TRUE(
      WaitFor([&] { return AllHeldBy(c_, more, a_id_); }, absl::Seconds(5)));
}

// --- Fast start from the own-origin snapshot (--start_snapshot) ---

// What a device serves of its own sidecars: its position and count, and its
// WhoHas answer for `keys` (sizes, checksums, generator versions).
std::string OwnState(ClusterTest* t, AvailabilityProcess* d,
                     const std::vector<Sidecar>& keys) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::DeviceInfo info;
  EXPECT_TRUE(d->api()->GetDevice(&ctx, {}, &info).ok());
  std::string out =
      absl::StrCat("generation ", info.generation(), " max_seq ",
                   info.max_seq(), " ready ", info.local_ready(), "\n");
  v1::WhoHasResponse r = t->WhoHas(d, keys);
  for (const auto& k : r.results()) absl::StrAppend(&out, k.DebugString(), "|");
  return out;
}

// Occurrences of `text` in `d`'s log (all its runs).
int LogCount(AvailabilityProcess* d, const std::string& text) {
  std::ifstream log(d->log_path());
  std::string all((std::istreambuf_iterator<char>(log)),
                  std::istreambuf_iterator<char>());
  int n = 0;
  for (size_t at = all.find(text); at != std::string::npos;
       at = all.find(text, at + 1)) {
    ++n;
  }
  return n;
}

void RemoveSidecars(AvailabilityProcess* d, const std::vector<Sidecar>& s) {
  v1::RemoveRequest req;
  for (const Sidecar& x : s) *req.add_keys() = x.key;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::RemoveResponse resp;
  ASSERT_TRUE(d->api()->Remove(&ctx, req, &resp).ok());
}

constexpr char kFromSnapshot[] = "own origin from its snapshot";
constexpr char kSnapshotUnused[] = "not used (";

// The state a start serves from its snapshot plus the newer change-log rows
// (written by a run that kept no snapshot) equals a full load's.
TEST_F(ClusterTest, StartFromSnapshotServesWhatAFullLoadServes) {
  AvailabilityProcess* a = AddDevice("a", {});
  ASSERT_TRUE(a->Start().ok());
  std::vector<Sidecar> all;
  for (int i = 0; i < 30; ++i)
    all.push_back(MakeSidecar(i, i % 2 ? "grid@2x" : "snap-variant"));
  std::vector<Sidecar> first(all.begin(), all.begin() + 20);
  Publish(a, first, "gen-1");
  RemoveSidecars(a, {all[0], all[1], all[2]});
  Publish(a, {all[3], all[4]}, "gen-2");  // new generator version
  EXPECT_EQ(a->Stop(), 0);
  const std::string file =
      absl::StrCat(a->state_dir(), "/", availability::kSelfSnapshotFile);
  ASSERT_TRUE(std::filesystem::exists(file));
  EXPECT_EQ(LogCount(a, "own-origin snapshot written at shutdown"), 1);

  // A run without snapshots changes more; the file stays as it was.
  ASSERT_TRUE(a->StartWithExtraFlags({{"start_snapshot", "false"}}).ok());
  Publish(a, std::vector<Sidecar>(all.begin() + 20, all.end()), "gen-3");
  RemoveSidecars(a, {all[5], all[21]});
  Publish(a, {all[0]}, "gen-3");  // back after its tombstone
  Publish(a, {all[6]}, "gen-4");
  EXPECT_EQ(a->Stop(), 0);
  EXPECT_EQ(LogCount(a, kFromSnapshot), 0);

  ASSERT_TRUE(a->Start().ok());
  EXPECT_EQ(LogCount(a, kFromSnapshot), 1) << a->log_path();
  const std::string from_snapshot = OwnState(this, a, all);
  EXPECT_EQ(a->Stop(), 0);
  ASSERT_TRUE(a->StartWithExtraFlags({{"start_snapshot", "false"}}).ok());
  EXPECT_EQ(OwnState(this, a, all), from_snapshot);
  // One more change the snapshot (written by the run before) lacks.
  std::vector<Sidecar> later = {MakeSidecar(99)};
  Publish(a, later);
  all.push_back(later[0]);
  const std::string full = OwnState(this, a, all);
  EXPECT_EQ(a->Stop(), 0);

  ASSERT_TRUE(a->Start().ok());
  EXPECT_EQ(LogCount(a, kFromSnapshot), 2) << a->log_path();
  EXPECT_EQ(OwnState(this, a, all), full);
}

// A snapshot of an older generation (the log was reset) is ignored.
TEST_F(ClusterTest, SnapshotOfAnotherGenerationIsIgnored) {
  AvailabilityProcess* a = AddDevice("a", {});
  ASSERT_TRUE(a->Start().ok());
  std::vector<Sidecar> s;
  for (int i = 0; i < 6; ++i) s.push_back(MakeSidecar(i));
  Publish(a, s);
  RemoveSidecars(a, {s[0]});
  EXPECT_EQ(a->Stop(), 0);
  ASSERT_TRUE(a->StartWithExtraFlags({{"reset_change_log", "true"}}).ok());
  EXPECT_EQ(LogCount(a, kFromSnapshot), 0);
  EXPECT_GE(LogCount(a, kSnapshotUnused), 1) << a->log_path();
  const std::string reset = OwnState(this, a, s);
  EXPECT_NE(reset.find("max_seq 5 ready 5"), std::string::npos) << reset;
  EXPECT_EQ(a->Stop(), 0);
  ASSERT_TRUE(a->StartWithExtraFlags({{"start_snapshot", "false"}}).ok());
  EXPECT_EQ(OwnState(this, a, s), reset);
}

// A damaged snapshot (a flipped byte, then a truncated file) is ignored,
// saying why, and the service serves the right state.
TEST_F(ClusterTest, DamagedSnapshotIsIgnored) {
  AvailabilityProcess* a = AddDevice("a", {});
  ASSERT_TRUE(a->Start().ok());
  std::vector<Sidecar> s;
  for (int i = 0; i < 6; ++i) s.push_back(MakeSidecar(i));
  Publish(a, s);
  const std::string want = OwnState(this, a, s);
  EXPECT_EQ(a->Stop(), 0);
  const std::string file =
      absl::StrCat(a->state_dir(), "/", availability::kSelfSnapshotFile);
  const auto size = std::filesystem::file_size(file);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(size / 2);
    char c;
    f.read(&c, 1);
    c ^= 0x01;
    f.seekp(size / 2);
    f.write(&c, 1);
  }
  ASSERT_TRUE(a->Start().ok());
  EXPECT_EQ(LogCount(a, "checksum mismatch"), 1) << a->log_path();
  EXPECT_EQ(LogCount(a, kFromSnapshot), 0);
  EXPECT_EQ(OwnState(this, a, s), want);
  EXPECT_EQ(a->Stop(), 0);
  std::filesystem::resize_file(file, size - 7);
  ASSERT_TRUE(a->Start().ok());
  EXPECT_EQ(LogCount(a, "truncated or damaged"), 1) << a->log_path();
  EXPECT_EQ(LogCount(a, kFromSnapshot), 0);
  EXPECT_EQ(OwnState(this, a, s), want);
}

// Runs a PostgreSQL client tool (pg_dump, pg_restore) of the test server's
// version; returns its exit status.
int RunPgTool(const std::string& tool, const std::string& args) {
  std::string cmd =
      absl::StrCat(PgServerOptions().bin_dir, "/", tool, " ", args, " 2>&1");
  std::cerr << "+ " << cmd << "\n";
  return std::system(cmd.c_str());
}

// The database of A goes back in time (a backup restored with pg_restore),
// so its change log forks from what B and C cached: they knew seqs that A
// now hands out anew. After the restore A registers `fresh_count` different
// sidecars at once. Both peers must then list exactly what A holds, C
// learning it through B alone. With `drop_mark` the state directory's
// change-log mark is gone too (restored with the database), so only the
// peers' digests can tell A of the fork.
void ForkAndHeal(ClusterTest* t, AvailabilityProcess* a, AvailabilityProcess* b,
                 AvailabilityProcess* c, const std::string& a_id,
                 bool drop_mark, int fresh_count) {
  std::vector<Sidecar> kept, lost, fresh;
  for (int i = 0; i < 5; ++i) kept.push_back(MakeSidecar(i));
  for (int i = 0; i < 5; ++i) lost.push_back(MakeSidecar(10 + i));
  for (int i = 0; i < fresh_count; ++i) fresh.push_back(MakeSidecar(20 + i));
  t->Publish(a, kept);
  ASSERT_TRUE(
      WaitFor([&] { return t->AllHeldBy(c, kept, a_id); }, absl::Seconds(5)));
  const std::string dump = absl::StrCat(a->state_dir(), "/../a.dump");
  ASSERT_EQ(RunPgTool("pg_dump", absl::StrCat("-Fc -f ", dump, " -d \"",
                                              a->conninfo(), "\"")),
            0);
  t->Publish(a, lost);
  ASSERT_TRUE(
      WaitFor([&] { return t->AllHeldBy(c, lost, a_id); }, absl::Seconds(5)));
  uint64_t old_gen = t->PeerEntry(b, a_id)->generation();
  ASSERT_EQ(t->PeerEntry(b, a_id)->max_seq(), 10u);

  // Restore the backup under A, then register different sidecars at once.
  EXPECT_EQ(a->Stop(), 0);
  ASSERT_EQ(RunPgTool("pg_restore", absl::StrCat("--clean --if-exists -1 -d \"",
                                                 a->conninfo(), "\" ", dump)),
            0);
  const std::string mark = absl::StrCat(a->state_dir(), "/change_log_mark");
  ASSERT_TRUE(std::filesystem::exists(mark));
  if (drop_mark) std::filesystem::remove(mark);
  ASSERT_TRUE(a->Start().ok()) << a->log_path();
  t->Publish(a, fresh);

  std::vector<Sidecar> all = kept;
  all.insert(all.end(), lost.begin(), lost.end());
  all.insert(all.end(), fresh.begin(), fresh.end());
  // Exactly what A holds: kept and fresh, never lost.
  auto exact = [&](AvailabilityProcess* d) {
    v1::WhoHasResponse r = t->WhoHas(d, all);
    for (size_t i = 0; i < all.size(); ++i) {
      bool held = i < kept.size() || i >= kept.size() + lost.size();
      std::vector<std::string> want;
      if (held) want.push_back(a_id);
      if (ClusterTest::Holders(r, i) != want) return false;
    }
    return true;
  };
  auto healed =
      WaitFor([&] { return exact(b) && exact(c); }, absl::Seconds(10));
  ASSERT_TRUE(healed.has_value())
      << "peers still list what A lost, or lack what it registered since";
  std::cerr << "B and C list exactly what A holds after " << *healed << "\n";
  grpc::ClientContext ctx;
  v1::DeviceInfo info;
  ASSERT_TRUE(a->api()->GetDevice(&ctx, {}, &info).ok());
  EXPECT_GT(info.generation(), old_gen);
  auto p = t->PeerEntry(b, a_id);  // C lists no peer A: they never talk
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->generation(), info.generation());
  EXPECT_EQ(p->sidecars(), kept.size() + fresh.size());
  // Which of the two caught it, by A's log.
  std::ifstream log(a->log_path());
  std::string text((std::istreambuf_iterator<char>(log)),
                   std::istreambuf_iterator<char>());
  EXPECT_EQ(
      text.find("is behind what this device had reached") != std::string::npos,
      !drop_mark)
      << "the change-log mark should catch the restore at start iff kept";
  EXPECT_EQ(text.find("more than the database holds") != std::string::npos,
            drop_mark)
      << "the peers' digests should prove the fork iff the mark is gone";
  // The healed log goes on: a new registration reaches C through B.
  std::vector<Sidecar> later = {MakeSidecar(30)};
  t->Publish(a, later);
  EXPECT_TRUE(
      WaitFor([&] { return t->AllHeldBy(c, later, a_id); }, absl::Seconds(5)));
}

// The mark in the state directory catches the restore at start, even when
// A hands out more new seqs than it lost before any peer is asked.
TEST_F(ClusterTest, RestoredDatabaseIsCaughtAtStartByTheChangeLogMark) {
  StartLine();
  ForkAndHeal(this, a_, b_, c_, a_id_, /*drop_mark=*/false, /*fresh_count=*/8);
}

// Without the mark, the peers' digests prove the fork (ForkHealer).
TEST_F(ClusterTest, ForkedChangeLogHealsByThePeersDigests) {
  StartLine();
  ForkAndHeal(this, a_, b_, c_, a_id_, /*drop_mark=*/true, /*fresh_count=*/3);
}

// A receiver can only cancel an answer it refuses, which the sender sees as
// CANCELLED: it says why with its next request, and the sender logs that
// once. B keeps at most 10 entries of any other device; A advertises 30.
TEST_F(ClusterTest, ARefusedAnswerIsExplainedToItsSenderOnce) {
  a_ = AddDevice("a", {});
  const std::string port_file = absl::StrCat(dir_, "/b.metrics");
  b_ = AddDevice("b", {{"max_entries_per_origin", "10"},
                       {"metrics_listen", "127.0.0.1:0"},
                       {"metrics_port_file", port_file}});
  for (auto* d : {a_, b_}) ASSERT_TRUE(d->Start().ok()) << d->log_path();
  ASSERT_EQ(Pair(b_, a_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  std::vector<Sidecar> s;
  for (int i = 0; i < 30; ++i) s.push_back(MakeSidecar(100 + i));
  Publish(a_, s);
  auto count = [](AvailabilityProcess* d, const std::string& what) {
    std::ifstream log(d->log_path());
    std::string text((std::istreambuf_iterator<char>(log)),
                     std::istreambuf_iterator<char>());
    size_t n = 0;
    for (size_t at = text.find(what); at != std::string::npos;
         at = text.find(what, at + 1)) {
      ++n;
    }
    return n;
  };
  const std::string told =
      "refused this device's Exchange answer: RESOURCE_EXHAUSTED";
  ASSERT_TRUE(WaitFor([&] { return count(a_, told) > 0; }, absl::Seconds(10)))
      << a_->log_path();
  EXPECT_EQ(count(b_, "stopped: it sent more than this device accepts"), 1u);
  // More rounds, more refusals (every answer of A's is too big for B): each
  // is told, but logged once.
  const size_t rounds = count(b_, "exchange with ");
  for (int i = 0; i < 3; ++i) {
    Publish(a_, {MakeSidecar(200 + i)});
    absl::SleepFor(absl::Milliseconds(300));
  }
  EXPECT_GT(count(b_, "exchange with "), rounds) << "no further round";
  EXPECT_EQ(count(a_, told), 1u);
  EXPECT_GT(count(a_, "at most 10"), 0u) << "the reason is in the line";
  // Logged once, but every refusal counts, against the peer that sent it.
  const std::string m = Scrape(port_file);
  const double refused =
      testing::SampleSum(m, "sidecar_peer_rejected_total",
                         {{"device_id", a_id_}, {"code", "ResourceExhausted"}})
          .value_or(0);
  EXPECT_GE(refused, 2) << m;
  // Rounds go on meanwhile: a scrape may fall between the two counts.
  EXPECT_GE(testing::SampleSum(m, "sidecar_gossip_rounds_total",
                               {{"result", "refused"}})
                .value_or(0),
            2);
  // B never holds more of A's entries than it keeps.
  v1::WhoHasResponse r = WhoHas(b_, s);
  size_t held = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    auto h = Holders(r, static_cast<int>(i));
    held += std::count(h.begin(), h.end(), a_id_);
  }
  EXPECT_LE(held, 10u);
}

// The availability service's metrics, scraped over HTTP as Prometheus does,
// against what happened: b pulls a's state (a first snapshot, then a
// delta), knows a's sidecars and sees a online; when a stops, a is down.
TEST_F(ClusterTest, MetricsTellGossipPeersAndEntries) {
  const std::string port_file = absl::StrCat(dir_, "/b.metrics");
  a_ = AddDevice("a", {});
  b_ = AddDevice("b", {{"metrics_listen", "127.0.0.1:0"},
                       {"metrics_port_file", port_file}});
  ASSERT_TRUE(a_->Start().ok());
  ASSERT_TRUE(b_->Start().ok());
  std::vector<Sidecar> first = {MakeSidecar(1), MakeSidecar(2)};
  Publish(a_, first);
  ASSERT_EQ(Pair(a_, b_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  auto scrape = [&] { return Scrape(port_file); };
  auto value = [&](const std::string& text, const std::string& name,
                   const std::map<std::string, std::string>& labels = {}) {
    return testing::SampleSum(text, name, labels).value_or(-1);
  };
  // A round is counted as it ends, after its entries were applied as they
  // streamed in, and its counters one after another: a scrape may fall
  // between any two. So wait for all of them (they fail the test if they
  // never come), then check what must hold exactly.
  const std::map<std::string, std::string> exchange_ok = {
      {"grpc_service", "sidecar.v1.Peer"},
      {"grpc_method", "Exchange"},
      {"grpc_code", "OK"}};
  std::string m;
  ASSERT_TRUE(WaitFor(
      [&] {
        m = scrape();
        return value(m, "sidecar_origin_entries", {{"device_id", a_id_}}) ==
                   2 &&
               value(m, "sidecar_peer_up", {{"device_id", a_id_}}) == 1 &&
               value(m, "sidecar_gossip_rounds_total", {{"result", "ok"}}) >=
                   1 &&
               value(m, "sidecar_gossip_round_seconds_count") >= 1 &&
               value(m, "sidecar_gossip_applied_total",
                     {{"kind", "snapshot"}}) >= 1 &&
               value(m, "sidecar_gossip_received_bytes_total") > 0 &&
               // a's own exchange answers, seen from b's side of the calls.
               value(m, "grpc_client_handled_total", exchange_ok) >= 1;
      },
      absl::Seconds(10)))
      << m;
  EXPECT_EQ(value(m, "sidecar_peers", {{"state", "online"}}), 1);
  EXPECT_EQ(value(m, "sidecar_peers", {{"state", "offline"}}), 0);
  EXPECT_LE(value(m, "sidecar_gossip_round_seconds_count"),
            value(m, "sidecar_gossip_rounds_total"));
  EXPECT_EQ(value(m, "sidecar_gossip_rounds_total", {{"result", "refused"}}),
            0);
  EXPECT_EQ(testing::SampleCount(m, "sidecar_peer_rejected_total"), 0);

  // One more sidecar comes as a delta.
  Publish(a_, {MakeSidecar(3)});
  EXPECT_TRUE(WaitFor(
      [&] {
        m = scrape();
        return value(m, "sidecar_origin_entries", {{"device_id", a_id_}}) ==
                   3 &&
               value(m, "sidecar_gossip_applied_total", {{"kind", "delta"}}) >=
                   1;
      },
      absl::Seconds(10)))
      << m;

  // a stops: b marks it down (offline_after 1s).
  EXPECT_EQ(a_->Stop(), 0);
  EXPECT_TRUE(WaitFor(
      [&] {
        m = scrape();
        return value(m, "sidecar_peer_up", {{"device_id", a_id_}}) == 0;
      },
      absl::Seconds(10)))
      << m;
  EXPECT_EQ(value(m, "sidecar_peers", {{"state", "offline"}}), 1);
  // What b knows of a stays.
  EXPECT_EQ(value(m, "sidecar_origin_entries", {{"device_id", a_id_}}), 3);
}

TEST_F(ClusterTest, HealthServiceReportsServing) {
  a_ = AddDevice("a", {});
  ASSERT_TRUE(a_->Start().ok());
  auto stub =
      grpc::health::v1::Health::NewStub(MakeLocalChannel(a_->local_address()));
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  grpc::health::v1::HealthCheckRequest req;
  grpc::health::v1::HealthCheckResponse resp;
  ASSERT_TRUE(stub->Check(&ctx, req, &resp).ok());
  EXPECT_EQ(resp.status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(a_->Stop(), 0);
}

// gRPC's callback threads leave the poller for 100 ms after each idle second,
// and a server with sync and callback methods relies on them to read its
// sockets (common/poller_thread.h). Without a thread of its own in the
// poller, a request every 5 ms on an otherwise idle device met a 95-100 ms
// stall once every 1.1 s; in 6.6 s, about six.
TEST_F(ClusterTest, IdleDeviceAnswersWithoutPeriodicStalls) {
  a_ = AddDevice("a", {});
  ASSERT_TRUE(a_->Start().ok());
  int stalls = 0;
  double slowest_ms = 0;
  const absl::Time end = absl::Now() + absl::Milliseconds(6600);
  while (absl::Now() < end) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::DeviceInfo info;
    const absl::Time start = absl::Now();
    ASSERT_TRUE(a_->api()->GetDevice(&ctx, {}, &info).ok());
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    slowest_ms = std::max(slowest_ms, ms);
    stalls += ms >= 85;
    absl::SleepFor(absl::Milliseconds(5));
  }
  // A loaded machine may stall a call now and then; not every second.
  EXPECT_LE(stalls, 2) << "slowest call " << slowest_ms << " ms";
}

TEST_F(ClusterTest, DirectQueryFindsWhatGossipHasNotYetCarried) {
  // Long prompt delay: the direct query must answer before gossip does.
  a_ = AddDevice("a", {{"prompt_delay", "1m"}});
  b_ = AddDevice("b", {{"prompt_delay", "1m"}});
  ASSERT_TRUE(a_->Start().ok());
  ASSERT_TRUE(b_->Start().ok());
  ASSERT_EQ(Pair(a_, b_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  ASSERT_TRUE(WaitOnline(b_, a_id_));
  absl::SleepFor(absl::Milliseconds(300));  // start-up rounds done
  std::vector<Sidecar> s = {MakeSidecar(1)};
  Publish(a_, s);
  EXPECT_TRUE(Holders(WhoHas(b_, s), 0).empty());
  v1::WhoHasRequest req;
  *req.add_keys() = s[0].key;
  req.set_query_peers(true);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  v1::WhoHasResponse resp;
  ASSERT_TRUE(b_->api()->WhoHas(&ctx, req, &resp).ok());
  EXPECT_EQ(Holders(resp, 0), std::vector<std::string>{a_id_});
}

Sidecar MakeOcr(int i) {
  Sidecar s = MakeSidecar(i, "text");
  s.key.set_kind(v1::SIDECAR_KIND_OCR);
  s.key.set_format(v1::SIDECAR_FORMAT_JSON);
  return s;
}

// Flags of a leaf in these tests: pinged as often as the others, so that
// the test need not wait a minute.
std::map<std::string, std::string> LeafFlags(
    std::map<std::string, std::string> more = {}) {
  more.emplace("profile", "leaf");
  more.emplace("subscribe_kinds", "thumb");
  more.emplace("leaf_ping_interval", "200ms");
  more.emplace("offline_after", "1s");
  return more;
}

// A phone as a leaf between a full device A and a device C paired only with
// the phone: it mirrors only the thumbnails A has, asks A about the rest,
// offers its own sidecars, and relays nothing of A's to C.
TEST_F(ClusterTest, LeafMirrorsSubscriptionAndDelegates) {
  a_ = AddDevice("a", {{"contact_learned_peers", "false"},
                       {"leaf_ping_interval", "200ms"}});
  // Devices are named "<name>_<test>"; C, a full device too but in contact
  // with the leaf only, must not be the one asked.
  b_ = AddDevice(
      "leaf", LeafFlags({{"delegate",
                          absl::StrCat("a_", ::testing::UnitTest::GetInstance()
                                                 ->current_test_info()
                                                 ->name())}}));
  c_ = AddDevice("c", {{"contact_learned_peers", "false"},
                       {"leaf_ping_interval", "200ms"}});
  for (auto* d : {a_, b_, c_}) ASSERT_TRUE(d->Start().ok()) << d->log_path();
  ASSERT_EQ(Pair(a_, b_), absl::OkStatus());
  ASSERT_EQ(Pair(b_, c_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  b_id_ = DeviceId(b_);
  c_id_ = DeviceId(c_);
  std::vector<Sidecar> thumbs = {MakeSidecar(1), MakeSidecar(2),
                                 MakeSidecar(3)};
  std::vector<Sidecar> ocr = {MakeOcr(4), MakeOcr(5)};
  Publish(a_, thumbs);
  Publish(a_, ocr);
  std::vector<Sidecar> mine = {MakeSidecar(6)};
  Publish(b_, mine);

  // The leaf mirrors A's thumbnails, not its OCR text.
  auto mirrored = WaitFor(
      [&] {
        auto p = PeerEntry(b_, a_id_);
        return p && p->sidecars() == thumbs.size();
      },
      absl::Seconds(5));
  ASSERT_TRUE(mirrored.has_value()) << b_->log_path();
  // A and C learn the leaf's own sidecar.
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(a_, mine, b_id_); }, absl::Seconds(5)));
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(c_, mine, b_id_); }, absl::Seconds(5)));
  absl::SleepFor(absl::Milliseconds(600));  // more rounds, to be sure
  EXPECT_EQ(PeerEntry(b_, a_id_)->sidecars(), thumbs.size());
  EXPECT_FALSE(PeerEntry(b_, a_id_)->not_mirrored());
  EXPECT_TRUE(PeerEntry(a_, b_id_)->leaf());
  EXPECT_FALSE(PeerEntry(b_, a_id_)->leaf());
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::DeviceInfo info;
    ASSERT_TRUE(b_->api()->GetDevice(&ctx, {}, &info).ok());
    EXPECT_EQ(info.profile(), "leaf");
    EXPECT_EQ(info.mirrored_entries(), thumbs.size());
    EXPECT_EQ(info.mirror_budget_entries(), (8u << 20) / 96);
  }

  // Who has the OCR text: A, through delegation, with its version.
  v1::WhoHasResponse r = WhoHas(b_, ocr);
  for (size_t i = 0; i < ocr.size(); ++i) {
    EXPECT_EQ(Holders(r, i), std::vector<std::string>{a_id_}) << i;
  }
  ASSERT_GT(r.results(0).holders_size(), 0);
  EXPECT_EQ(r.results(0).holders(0).generator_version(), "test-1");
  ResolveResponse res = Resolve(b_, ocr[0].key);
  EXPECT_EQ(res.outcome(), ResolveResponse::OUTCOME_REMOTE) << res.reason();
  ASSERT_EQ(res.sources_size(), 1);
  EXPECT_EQ(res.sources(0).device_id(), a_id_);
  EXPECT_EQ(res.sources(0).transfer_address(), TransferAddressOf("a"));
  // Mirrored and delegated answers agree: A once per thumbnail.
  r = WhoHas(b_, thumbs);
  for (size_t i = 0; i < thumbs.size(); ++i) {
    EXPECT_EQ(Holders(r, i), std::vector<std::string>{a_id_}) << i;
  }

  // C, which talks to the leaf only, learns nothing of A from it.
  EXPECT_FALSE(PeerEntry(c_, a_id_).has_value() &&
               PeerEntry(c_, a_id_)->sidecars() > 0);
  r = WhoHas(c_, thumbs);
  for (size_t i = 0; i < thumbs.size(); ++i) EXPECT_TRUE(Holders(r, i).empty());
}

// A leaf whose budget is smaller than what a peer has mirrors none of it,
// and still finds every sidecar by delegation.
TEST_F(ClusterTest, LeafOverBudgetMirrorsNothing) {
  a_ = AddDevice("a", {{"leaf_ping_interval", "200ms"}});
  // Room for two entries; A has three thumbnails.
  b_ = AddDevice("leaf", LeafFlags({{"leaf_cache_bytes", "192"}}));
  for (auto* d : {a_, b_}) ASSERT_TRUE(d->Start().ok()) << d->log_path();
  ASSERT_EQ(Pair(a_, b_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  std::vector<Sidecar> thumbs = {MakeSidecar(1), MakeSidecar(2),
                                 MakeSidecar(3)};
  Publish(a_, thumbs);
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, thumbs, a_id_); }, absl::Seconds(5)));
  auto refused = WaitFor(
      [&] {
        std::ifstream log(b_->log_path());
        std::string text((std::istreambuf_iterator<char>(log)), {});
        return text.find("more than this leaf keeps") != std::string::npos;
      },
      absl::Seconds(5));
  ASSERT_TRUE(refused.has_value()) << b_->log_path();
  auto pulls = [&] {
    std::ifstream log(b_->log_path());
    std::string line;
    int n = 0;
    while (std::getline(log, line)) {
      n += line.find("] exchange with ") != std::string::npos;
    }
    return n;
  };
  absl::SleepFor(absl::Milliseconds(300));
  const int before = pulls();
  absl::SleepFor(absl::Seconds(1));
  // No retry storm: the leaf does not keep pulling what it cannot keep
  // (pings come every 200 ms here; a pull at each would be 5).
  EXPECT_LE(pulls() - before, 2) << b_->log_path();
  auto p = PeerEntry(b_, a_id_);
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->sidecars(), 0u);
  EXPECT_TRUE(p->not_mirrored());
}

// A full device's changes reach a leaf leaf_prompt_delay later, not
// prompt_delay (a desktop importing must not keep a phone awake).
TEST_F(ClusterTest, LeafIsPromptedAfterTheLeafDelay) {
  a_ = AddDevice(
      "a", {{"leaf_ping_interval", "200ms"}, {"leaf_prompt_delay", "2s"}});
  b_ = AddDevice("leaf", LeafFlags());
  for (auto* d : {a_, b_}) ASSERT_TRUE(d->Start().ok()) << d->log_path();
  ASSERT_EQ(Pair(a_, b_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  ASSERT_TRUE(WaitOnline(b_, a_id_));
  absl::SleepFor(absl::Milliseconds(500));  // start-up rounds done
  const absl::Time start = absl::Now();
  for (int i = 0; i < 5; ++i) {
    Publish(a_, {MakeSidecar(i)});
    absl::SleepFor(absl::Milliseconds(100));
  }
  auto mirrored = [&](uint64_t n) {
    auto p = PeerEntry(b_, a_id_);
    return p && p->sidecars() == n;
  };
  // Not before the delay (A's own devices would have it in 0.1 s)...
  absl::SleepFor(absl::Seconds(1) - (absl::Now() - start));
  EXPECT_TRUE(mirrored(0)) << b_->log_path();
  // ...then all five.
  ASSERT_TRUE(WaitFor([&] { return mirrored(5); }, absl::Seconds(10)))
      << b_->log_path();
  EXPECT_GE(absl::Now() - start, absl::Seconds(2));
}

// With no full member answering, a leaf asks the online peers directly:
// another leaf tells it what it holds itself.
TEST_F(ClusterTest, LeafAsksPeersWithoutDelegate) {
  a_ = AddDevice("a", {{"leaf_ping_interval", "200ms"}});
  b_ = AddDevice("leaf1", LeafFlags({{"delegate_cache_ttl", "200ms"}}));
  c_ = AddDevice("leaf2", LeafFlags());
  for (auto* d : {a_, b_, c_}) ASSERT_TRUE(d->Start().ok()) << d->log_path();
  ASSERT_EQ(Pair(a_, b_), absl::OkStatus());
  ASSERT_EQ(Pair(a_, c_), absl::OkStatus());
  a_id_ = DeviceId(a_);
  c_id_ = DeviceId(c_);
  std::vector<Sidecar> ocr = {MakeOcr(1)};
  Publish(c_, ocr);
  // Through A first.
  ASSERT_TRUE(
      WaitFor([&] { return AllHeldBy(b_, ocr, c_id_); }, absl::Seconds(5)))
      << b_->log_path();
  ASSERT_TRUE(WaitOnline(b_, c_id_));
  ASSERT_EQ(kill(a_->pid(), SIGSTOP), 0);
  absl::SleepFor(absl::Milliseconds(300));  // the cached answer expires
  v1::WhoHasResponse r = WhoHas(b_, ocr);
  kill(a_->pid(), SIGCONT);
  EXPECT_EQ(Holders(r, 0), std::vector<std::string>{c_id_}) << b_->log_path();
}

}  // namespace
}  // namespace sidecar::testing
