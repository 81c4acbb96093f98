// Who may talk to a device, end to end: real sidecar-availability and
// sidecar-transfer processes on loopback with real PostgreSQL, and made-up
// devices in the test process (TestPeer, in-process servers) that try what
// an attacker on the network would: calling as a stranger, forging the
// Hello of another member, presenting another key, reaching the local API
// through the peer listener, wrong, expired, reused and intercepted pairing
// codes; then the library (a member learned through another is trusted),
// unpairing, and a device that refuses to start with a damaged identity.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/device_key.h"
#include "common/pairing_code.h"
#include "common/peer_trust.h"
#include "common/pg/connection.h"
#include "common/request_limits.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/transport.h"
#include "services/availability/gossip_protocol.h"
#include "services/availability/library.h"
#include "sidecar/v1/availability.grpc.pb.h"
#include "sidecar/v1/metrics.grpc.pb.h"
#include "sidecar/v1/peer.grpc.pb.h"
#include "sidecar/v1/transfer.grpc.pb.h"
#include "tests/support/availability_process.h"
#include "tests/support/pg_test.h"
#include "tests/support/process.h"
#include "tests/support/tcp_proxy.h"
#include "tests/support/test_data.h"
#include "tests/support/test_peer.h"
#include "tests/support/transfer_process.h"
#include "tests/support/wait.h"

namespace sidecar::testing {
namespace {

using grpc::StatusCode;

std::string Describe(const grpc::Status& s) {
  return absl::StrCat("code ", s.error_code(), ": ", s.error_message());
}

// The 16 raw bytes of a device id in text form.
std::string IdBytes(const std::string& id_text) {
  absl::StatusOr<Uuid> id = Uuid::Parse(id_text);
  return id.ok() ? std::string(id->AsBytes()) : std::string();
}

// A Hello naming device `id_text` (a claim: nothing makes it true).
v1::Hello HelloNaming(const std::string& id_text, const std::string& name,
                      const std::string& peer_address = "",
                      const std::string& transfer_address = "") {
  v1::Hello h;
  h.set_device_id(IdBytes(id_text));
  h.set_generation(1);
  h.set_name(name);
  h.set_peer_address(peer_address);
  h.set_transfer_address(transfer_address);
  return h;
}

v1::Hello HelloOf(const DeviceKey& key, const std::string& name) {
  return HelloNaming(key.device_id().ToString(), name);
}

// A membership record introducing `key`'s device, signed by `signer`.
v1::MemberRecord Introduction(const DeviceKey& key, const std::string& name,
                              const DeviceKey& signer) {
  v1::Introduction intro;
  intro.set_certificate(key.certificate().der);
  intro.set_name(name);
  intro.set_admitted_by(std::string(signer.device_id().AsBytes()));
  intro.set_admitted_at_ms(absl::ToUnixMillis(absl::Now()));
  std::string body = intro.SerializeAsString();
  std::string signed_part = availability::kIntroductionContext;
  signed_part.push_back('\0');
  signed_part += body;
  v1::MemberRecord r;
  r.mutable_introduction()->set_body(body);
  r.mutable_introduction()->set_signature(signer.Sign(signed_part));
  return r;
}

// `record` (a member's introduction) with a removal signed by `signer`.
v1::MemberRecord WithRemoval(v1::MemberRecord record, const Uuid& device,
                             const DeviceKey& signer) {
  v1::Removal removal;
  removal.set_device_id(std::string(device.AsBytes()));
  removal.set_removed_by(std::string(signer.device_id().AsBytes()));
  removal.set_removed_at_ms(absl::ToUnixMillis(absl::Now()));
  std::string body = removal.SerializeAsString();
  std::string signed_part = availability::kRemovalContext;
  signed_part.push_back('\0');
  signed_part += body;
  record.mutable_removal()->set_body(body);
  record.mutable_removal()->set_signature(signer.Sign(signed_part));
  return record;
}

// --- Calls on the peer APIs, reporting everything that came back. ---

grpc::Status CallPing(v1::Peer::Stub* stub, const v1::Hello* from,
                      v1::PingResponse* resp) {
  v1::PingRequest req;
  if (from != nullptr) *req.mutable_from() = *from;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  return stub->Ping(&ctx, req, resp);
}

struct ExchangeResult {
  grpc::Status status;
  int messages = 0;
  int entries = 0;
};

ExchangeResult CallExchange(v1::Peer::Stub* stub,
                            const v1::ExchangeRequest& req) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  auto reader = stub->Exchange(&ctx, req);
  ExchangeResult out;
  v1::ExchangeResponse msg;
  while (reader->Read(&msg)) {
    ++out.messages;
    if (msg.has_batch()) out.entries += msg.batch().uuids().size() / 16;
  }
  out.status = reader->Finish();
  return out;
}

grpc::Status CallHasKeys(v1::Peer::Stub* stub, const v1::Hello* from,
                         const v1::SidecarKey& key, v1::HasKeysResponse* resp) {
  v1::HasKeysRequest req;
  if (from != nullptr) *req.mutable_from() = *from;
  *req.add_keys() = key;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  return stub->HasKeys(&ctx, req, resp);
}

grpc::Status CallSyncMembers(v1::Peer::Stub* stub,
                             const v1::SyncMembersRequest& req,
                             v1::SyncMembersResponse* resp) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  return stub->SyncMembers(&ctx, req, resp);
}

struct ReadResult {
  grpc::Status status;
  int chunks = 0;
  std::string bytes;
};

ReadResult CallRead(v1::TransferPeer::Stub* stub, const v1::SidecarKey& key) {
  v1::ReadRequest req;
  *req.mutable_key() = key;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  auto reader = stub->Read(&ctx, req);
  ReadResult out;
  v1::ReadChunk c;
  while (reader->Read(&c)) {
    ++out.chunks;
    out.bytes += c.data();
  }
  out.status = reader->Finish();
  return out;
}

struct BatchResult {
  grpc::Status status;
  int messages = 0;
  int items = 0;
  std::string bytes;
};

BatchResult CallBatchRead(v1::TransferPeer::Stub* stub,
                          const std::vector<v1::SidecarKey>& keys) {
  v1::BatchReadRequest req;
  for (const auto& k : keys) *req.add_keys() = k;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  auto reader = stub->BatchRead(&ctx, req);
  BatchResult out;
  v1::BatchReadResponse msg;
  while (reader->Read(&msg)) {
    ++out.messages;
    for (const auto& item : msg.items()) {
      ++out.items;
      out.bytes += item.data();
    }
  }
  out.status = reader->Finish();
  return out;
}

// A Peer service in the test process that answers nothing useful and
// counts the calls that reach it: a man in the middle, or a device with
// another key at an address a channel was pinned for.
class CountingPeer final : public v1::Peer::Service {
 public:
  grpc::Status Ping(grpc::ServerContext*, const v1::PingRequest*,
                    v1::PingResponse*) override {
    ++calls;
    return grpc::Status::OK;
  }
  grpc::Status Join(grpc::ServerContext*, const v1::JoinRequest*,
                    v1::JoinResponse*) override {
    ++calls;
    ++joins;
    return grpc::Status(StatusCode::UNAVAILABLE, "the man in the middle");
  }
  grpc::Status SyncMembers(grpc::ServerContext*, const v1::SyncMembersRequest*,
                           v1::SyncMembersResponse*) override {
    ++calls;
    return grpc::Status::OK;
  }
  std::atomic<int> calls{0};
  std::atomic<int> joins{0};
};

// A member in the test process that lies about a third device, `victim`,
// to every device that pulls from it. Each answer holds what a relay could
// try within the victim's current generation (the one the asker caches):
//   1. an empty snapshot at a later seq, unsigned (forget everything, and
//      take the victim's next changes for old);
//   2. an empty snapshot with the victim's real head;
//   3. a withdrawal of one of the victim's sidecars, with its real head;
//   4. a sidecar the victim does not have, with its real head.
class ForgingRelay final : public v1::Peer::Service {
 public:
  ForgingRelay(v1::Hello self, v1::OriginInfo victim, availability::Entry held)
      : self_(std::move(self)), victim_(std::move(victim)), held_(held) {}

  grpc::Status Ping(grpc::ServerContext*, const v1::PingRequest*,
                    v1::PingResponse* resp) override {
    *resp->mutable_self() = self_;
    return grpc::Status::OK;
  }
  grpc::Status SyncMembers(grpc::ServerContext*, const v1::SyncMembersRequest*,
                           v1::SyncMembersResponse*) override {
    return grpc::Status::OK;
  }
  grpc::Status Exchange(
      grpc::ServerContext*, const v1::ExchangeRequest* req,
      grpc::ServerWriter<v1::ExchangeResponse>* writer) override {
    for (const v1::OriginDigest& d : req->digest()) {
      if (d.device_id() != victim_.device_id()) continue;
      for (const v1::ExchangeResponse& m : Lies(d)) writer->Write(m);
      ++answers;
    }
    v1::ExchangeResponse summary;
    *summary.mutable_summary()->mutable_self() = self_;
    writer->Write(summary);
    return grpc::Status::OK;
  }

  std::atomic<int> answers{0};

 private:
  std::vector<v1::ExchangeResponse> Lies(const v1::OriginDigest& d) const {
    using availability::Entry;
    const uint64_t head_seq = victim_.head().max_seq();
    auto batch = [&](v1::EntryBatch::Mode mode, uint64_t up_to_seq,
                     bool with_head, const std::vector<Entry>& entries) {
      v1::ExchangeResponse r;
      v1::EntryBatch* b = r.mutable_batch();
      *b->mutable_origin() = victim_;
      b->mutable_origin()->set_generation(d.generation());
      if (!with_head) b->mutable_origin()->clear_head();
      b->set_mode(mode);
      b->set_first(mode == v1::EntryBatch::MODE_SNAPSHOT);
      b->set_last(mode == v1::EntryBatch::MODE_SNAPSHOT);
      b->set_up_to_seq(up_to_seq);
      availability::EncodeEntries(entries, b);
      return r;
    };
    Entry withdrawn = Entry::Make(held_.content, held_.kind(), held_.format(),
                                  held_.variant(), held_.size(), held_.sha256,
                                  head_seq, /*removed=*/true);
    Entry invented = Entry::Make(Uuid::Random(), held_.kind(), held_.format(),
                                 held_.variant(), 77, held_.sha256, head_seq,
                                 /*removed=*/false);
    return {batch(v1::EntryBatch::MODE_SNAPSHOT, d.max_seq() + 1000, false, {}),
            batch(v1::EntryBatch::MODE_SNAPSHOT, head_seq, true, {}),
            batch(v1::EntryBatch::MODE_DELTA, head_seq, true, {withdrawn}),
            batch(v1::EntryBatch::MODE_DELTA, head_seq, true, {invented})};
  }

  const v1::Hello self_;
  const v1::OriginInfo victim_;     // with the victim's real head
  const availability::Entry held_;  // one of the victim's sidecars
};

// --- What a failed start must leave alone. ---

struct FileState {
  bool regular = false;
  mode_t mode = 0;
  std::string bytes;
  bool operator==(const FileState&) const = default;
};

// Every entry under `dir` (relative path -> type, mode and bytes).
std::map<std::string, FileState> SnapshotDir(const std::string& dir) {
  std::map<std::string, FileState> out;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) != 0) continue;
    FileState f;
    f.mode = st.st_mode;
    f.regular = S_ISREG(st.st_mode);
    if (f.regular) f.bytes = ReadAll(it->path().string());
    out[std::filesystem::relative(it->path(), dir).string()] = f;
  }
  return out;
}

std::string DescribeDir(const std::map<std::string, FileState>& s) {
  std::string out;
  for (const auto& [name, f] : s) {
    absl::StrAppend(&out, name, " mode ", absl::StrFormat("%o", f.mode), " ",
                    f.bytes.size(), " bytes; ");
  }
  return out;
}

// Row count and a checksum of the rows, per table of the database.
std::map<std::string, std::string> SnapshotDb(const std::string& conninfo) {
  std::map<std::string, std::string> out;
  absl::StatusOr<std::unique_ptr<pg::Connection>> conn =
      pg::Connection::Open(conninfo);
  if (!conn.ok()) {
    out["<error>"] = conn.status().ToString();
    return out;
  }
  absl::StatusOr<pg::Result> tables = (*conn)->Exec(
      "SELECT table_name FROM information_schema.tables WHERE "
      "table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1");
  if (!tables.ok()) {
    out["<error>"] = tables.status().ToString();
    return out;
  }
  for (int i = 0; i < tables->rows(); ++i) {
    std::string t(tables->Get(i, 0));
    absl::StatusOr<pg::Result> r = (*conn)->Exec(absl::StrCat(
        "SELECT count(*)::text || ':' || coalesce(md5(string_agg(t::text, "
        "E'\\n' ORDER BY t::text)), '') FROM \"",
        t, "\" t"));
    out[t] = r.ok() ? std::string(r->Get(0, 0)) : r.status().ToString();
  }
  return out;
}

struct Device {
  std::string name;
  std::unique_ptr<AvailabilityProcess> avail;
  std::unique_ptr<TransferProcess> xfer;  // null for availability only
  std::unique_ptr<TcpProxy> proxy;        // in front of xfer, counts bytes
  std::string id;                         // device id, text
  DeviceCertificate cert;
};

class PeerAuthTest : public ::sidecar::testing::ProcessTest {
 protected:
  void TearDown() override {
    devices_.clear();  // stops the processes first
    ProcessTest::TearDown();
  }

  static std::map<std::string, std::string> AvailabilityFlags() {
    return {{"ping_interval", "200ms"},
            {"offline_after", "1s"},
            {"prompt_delay", "50ms"},
            {"gossip_interval", "5m"},
            {"rpc_timeout", "1s"}};
  }

  // A device (not started); with its transfer service if `transfer`.
  Device* Add(const std::string& name, bool transfer = false) {
    auto d = std::make_unique<Device>();
    // Unique across the suite: databases live on the suite's one server.
    d->name = absl::StrCat(name, "_", ++counter_);
    auto a = AvailabilityProcess::Create(AVAILABILITY_BIN, server_, dir_,
                                         {d->name, {}, AvailabilityFlags()});
    EXPECT_TRUE(a.ok()) << a.status();
    if (!a.ok()) return nullptr;
    d->avail = std::move(*a);
    if (transfer) {
      auto x = TransferProcess::Create(TRANSFER_BIN, server_, dir_, d->name,
                                       d->avail->state_dir(),
                                       d->avail->sidecar_root(),
                                       {{"retry_initial_backoff", "50ms"},
                                        {"prefetch_kinds", ""},
                                        {"stall_timeout", "2s"},
                                        {"members_interval", "1s"},
                                        {"rpc_timeout", "1s"}});
      EXPECT_TRUE(x.ok()) << x.status();
      if (!x.ok()) return nullptr;
      d->xfer = std::move(*x);
      auto proxy = TcpProxy::Start("127.0.0.1", 0);
      EXPECT_TRUE(proxy.ok()) << proxy.status();
      if (!proxy.ok()) return nullptr;
      d->proxy = std::move(*proxy);
    }
    devices_.push_back(std::move(d));
    return devices_.back().get();
  }

  // Starts the availability service, then the transfer service (peers
  // reach it through the counting proxy).
  void Start(Device* d, std::map<std::string, std::string> extra = {},
             const std::map<std::string, std::string>& xfer_extra = {}) {
    ASSERT_NE(d, nullptr);
    if (d->proxy) extra.emplace("transfer_address", d->proxy->address());
    absl::Status s = d->avail->StartWithExtraFlags(extra);
    ASSERT_TRUE(s.ok()) << s;
    if (d->xfer) {
      absl::Status x = d->xfer->Start(xfer_extra);
      ASSERT_TRUE(x.ok()) << x;
      d->proxy->Retarget(d->xfer->port());
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::DeviceInfo info;
    grpc::Status g = d->avail->api()->GetDevice(&ctx, {}, &info);
    ASSERT_TRUE(g.ok()) << Describe(g);
    d->id = info.device_id();
    absl::StatusOr<DeviceCertificate> cert = d->avail->certificate();
    ASSERT_TRUE(cert.ok()) << cert.status();
    d->cert = *cert;
    ASSERT_EQ(d->cert.device_id.ToString(), d->id);
  }

  std::unique_ptr<TestPeer> NewPeer(const std::string& name) {
    auto p = TestPeer::Create(dir_, absl::StrCat("peer_", name));
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  // Stubs to `d`'s peer listeners as `key`, pinned to d's certificate.
  static std::unique_ptr<v1::Peer::Stub> PeerStubAs(const DeviceKey& key,
                                                    Device* d) {
    return v1::Peer::NewStub(
        MakePeerChannel(d->avail->address(), key, d->cert));
  }
  static std::unique_ptr<v1::TransferPeer::Stub> TransferStubAs(
      const DeviceKey& key, Device* d) {
    return v1::TransferPeer::NewStub(
        MakePeerChannel(d->xfer->address(), key, d->cert));
  }

  // Waits until `d`'s transfer service lets `key` in (it follows the
  // members of its availability service every --members_interval).
  static bool TransferAdmits(const DeviceKey& key, Device* d) {
    auto stub = TransferStubAs(key, d);
    v1::SidecarKey probe = RandomKeyProto();
    return WaitFor(
               [&] {
                 return CallRead(stub.get(), probe).status.error_code() !=
                        StatusCode::UNAUTHENTICATED;
               },
               absl::Seconds(5), absl::Milliseconds(50))
        .has_value();
  }

  v1::ListMembersResponse Members(Device* d, bool include_removed = false) {
    v1::ListMembersRequest req;
    req.set_include_removed(include_removed);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::ListMembersResponse resp;
    grpc::Status s = d->avail->api()->ListMembers(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << Describe(s);
    return resp;
  }
  std::optional<v1::Member> MemberEntry(Device* d, const std::string& id,
                                        bool include_removed = false) {
    const v1::ListMembersResponse all = Members(d, include_removed);
    for (const auto& m : all.members()) {
      if (m.device_id() == id) return m;
    }
    return std::nullopt;
  }
  // Who is a member, with which key, removed or not: what must not change.
  std::set<std::string> MemberSet(Device* d) {
    std::set<std::string> out;
    const v1::ListMembersResponse all = Members(d, true);
    for (const auto& m : all.members()) {
      out.insert(absl::StrCat(m.device_id(), " ", m.fingerprint(),
                              m.removed() ? " removed" : ""));
    }
    return out;
  }
  std::set<std::string> MemberIds(Device* d) {
    std::set<std::string> out;
    const v1::ListMembersResponse all = Members(d);
    for (const auto& m : all.members()) out.insert(m.device_id());
    return out;
  }

  std::vector<v1::PeerInfo> Peers(Device* d) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::ListPeersResponse resp;
    grpc::Status s = d->avail->api()->ListPeers(&ctx, {}, &resp);
    EXPECT_TRUE(s.ok()) << Describe(s);
    return {resp.peers().begin(), resp.peers().end()};
  }
  std::optional<v1::PeerInfo> PeerEntry(Device* d, const std::string& id) {
    for (const auto& p : Peers(d)) {
      if (p.device_id() == id) return p;
    }
    return std::nullopt;
  }
  std::set<std::string> PeerIds(Device* d) {
    std::set<std::string> out;
    for (const auto& p : Peers(d)) out.insert(p.device_id());
    return out;
  }

  // Writes the file under d's root and registers it READY.
  v1::SidecarKey Publish(Device* d, const std::string& bytes,
                         v1::SidecarKey key = RandomKeyProto()) {
    absl::Status s = PublishSidecar(d->avail.get(), key, bytes);
    EXPECT_TRUE(s.ok()) << s;
    return key;
  }

  std::vector<std::string> Holders(Device* d, const v1::SidecarKey& key) {
    v1::WhoHasRequest req;
    *req.add_keys() = key;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::WhoHasResponse resp;
    grpc::Status s = d->avail->api()->WhoHas(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << Describe(s);
    std::vector<std::string> out;
    if (resp.results_size() != 1) return out;
    for (const auto& h : resp.results(0).holders()) {
      out.push_back(resp.devices(h.device()).device_id());
    }
    return out;
  }
  bool HeldBy(Device* d, const v1::SidecarKey& key, const std::string& id) {
    std::vector<std::string> h = Holders(d, key);
    return std::find(h.begin(), h.end(), id) != h.end();
  }

  v1::ResolveResponse Resolve(Device* d, const v1::SidecarKey& key) {
    v1::ResolveRequest req;
    *req.mutable_key() = key;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::ResolveResponse resp;
    grpc::Status s = d->avail->api()->Resolve(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << Describe(s);
    return resp;
  }
  bool OffersSource(Device* d, const v1::SidecarKey& key,
                    const std::string& id) {
    v1::ResolveResponse r = Resolve(d, key);
    if (r.outcome() != v1::ResolveResponse::OUTCOME_REMOTE) return false;
    for (const auto& s : r.sources()) {
      if (s.device_id() == id) return true;
    }
    return false;
  }

  // Joins `joiner` with a code `inviter` makes, returning the status.
  grpc::Status JoinWithCode(Device* joiner, const std::string& code,
                            const std::string& address,
                            v1::JoinLibraryResponse* resp = nullptr) {
    v1::JoinLibraryRequest req;
    req.set_code(code);
    req.set_address(address);
    v1::JoinLibraryResponse r;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(20));
    return joiner->avail->api()->JoinLibrary(&ctx, req, resp ? resp : &r);
  }
  std::string Invite(Device* inviter, uint32_t ttl_seconds = 0) {
    v1::CreateInviteRequest req;
    req.set_ttl_seconds(ttl_seconds);
    v1::CreateInviteResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    grpc::Status s = inviter->avail->api()->CreateInvite(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << Describe(s);
    return resp.code();
  }

  // The argv AvailabilityProcess uses for `d`, for a start that is expected
  // to fail (so not through ServiceProcess, which waits for a port file).
  std::vector<std::string> AvailabilityArgv(Device* d,
                                            const std::string& port_file) {
    std::vector<std::string> argv = {
        AVAILABILITY_BIN,
        "--listen=127.0.0.1:0",
        absl::StrCat("--db=", d->avail->conninfo()),
        absl::StrCat("--name=", d->avail->name()),
        absl::StrCat("--sidecar_root=", d->avail->sidecar_root()),
        absl::StrCat("--state_dir=", d->avail->state_dir()),
        absl::StrCat("--port_file=", port_file),
        "--peers=",
    };
    for (const auto& [k, v] : AvailabilityFlags()) {
      argv.push_back(absl::StrCat("--", k, "=", v));
    }
    return argv;
  }

  struct Run {
    int status = -1;
    absl::Duration took;
    std::string log;
    bool port_file_written = false;
  };
  // Runs `argv` (plus `extra`) to its end, at most 20 s.
  Run RunToExit(std::vector<std::string> argv,
                const std::vector<std::string>& extra, const std::string& tag,
                const std::string& port_file) {
    for (const auto& e : extra) argv.push_back(e);
    std::string log = absl::StrCat(dir_, "/", tag, ".log");
    ::unlink(port_file.c_str());
    Run r;
    absl::Time t0 = absl::Now();
    absl::StatusOr<int> s = RunCommand(argv, {}, log, absl::Seconds(20));
    r.took = absl::Now() - t0;
    EXPECT_TRUE(s.ok()) << s.status();
    r.status = s.ok() ? *s : -1;
    r.log = ReadAll(log);
    r.port_file_written = std::filesystem::exists(port_file);
    return r;
  }

  // Starts `d` once so that it makes its key and database, then ends it
  // (SIGKILL: a graceful stop takes seconds and changes nothing here; what
  // it wrote is committed).
  void Initialize(Device* d) {
    ASSERT_NO_FATAL_FAILURE(Start(d));
    d->avail->Kill();
  }

  // Expects a start of `d`'s availability service to fail clearly and to
  // write nothing; `words` must all appear in its output.
  void ExpectStartRefused(Device* d, const std::vector<std::string>& words,
                          const std::string& tag) {
    const std::string state = d->avail->state_dir();
    std::map<std::string, FileState> files_before = SnapshotDir(state);
    std::map<std::string, std::string> db_before =
        SnapshotDb(d->avail->conninfo());
    ASSERT_FALSE(db_before.empty());
    ASSERT_FALSE(db_before.contains("<error>")) << db_before["<error>"];
    std::string port_file = absl::StrCat(dir_, "/", tag, ".port");
    Run r = RunToExit(AvailabilityArgv(d, port_file), {}, tag, port_file);
    std::cerr << tag << ": exit " << r.status << " after " << r.took << "\n";
    for (absl::string_view line : absl::StrSplit(r.log, '\n')) {
      if (absl::StartsWith(line, "E")) std::cerr << "  " << line << "\n";
    }
    EXPECT_NE(r.status, 0) << r.log;
    EXPECT_LT(r.took, absl::Seconds(5)) << r.log;
    EXPECT_FALSE(r.port_file_written) << "it served: " << r.log;
    for (const std::string& w : words) {
      EXPECT_TRUE(absl::StrContains(r.log, w))
          << "\"" << w << "\" not in the output:\n"
          << r.log;
    }
    std::map<std::string, FileState> files_after = SnapshotDir(state);
    EXPECT_TRUE(files_after == files_before)
        << "before: " << DescribeDir(files_before)
        << "\nafter: " << DescribeDir(files_after);
    EXPECT_EQ(SnapshotDb(d->avail->conninfo()), db_before);
  }

  static inline int counter_ = 0;
  std::vector<std::unique_ptr<Device>> devices_;
};

// ---------------------------------------------------------------------------
// 1. A device that never paired is refused on every peer RPC.

// A and B paired, A holding a sidecar; a stranger, and a member for the
// positive controls (what the stranger would have got).
class StrangerTest : public PeerAuthTest {
 protected:
  // `a_flags`: for both of A's services.
  void SetUpDevices(bool transfer,
                    const std::map<std::string, std::string>& a_flags = {}) {
    a_ = Add("a", transfer);
    b_ = Add("b");
    ASSERT_NO_FATAL_FAILURE(Start(a_, a_flags, a_flags));
    ASSERT_NO_FATAL_FAILURE(Start(b_));
    ASSERT_EQ(Pair(a_->avail.get(), b_->avail.get()), absl::OkStatus());
    bytes_ = RandomBytes(20000, 1);
    key_ = Publish(a_, bytes_);
    stranger_ = NewPeer("stranger");
    member_ = NewPeer("member");
    ASSERT_TRUE(stranger_ && member_);
    ASSERT_TRUE(member_->JoinLibraryOf(a_->avail.get()).ok());
    // B is listed as a peer of A and online: the lists are not trivially
    // empty.
    ASSERT_TRUE(WaitFor(
        [&] {
          auto p = PeerEntry(a_, b_->id);
          return p && p->online();
        },
        absl::Seconds(5)));
    members_before_ = MemberSet(a_);
    ASSERT_EQ(members_before_.size(), 3u);
  }

  // A does not know the stranger afterwards.
  void ExpectStrangerUnknown() {
    const std::string sid = stranger_->key().device_id().ToString();
    EXPECT_FALSE(PeerIds(a_).contains(sid));
    EXPECT_FALSE(PeerIds(b_).contains(sid));
    EXPECT_EQ(MemberSet(a_), members_before_);
    EXPECT_FALSE(MemberIds(b_).contains(sid));
  }

  Device* a_ = nullptr;
  Device* b_ = nullptr;
  std::string bytes_;
  v1::SidecarKey key_;
  std::unique_ptr<TestPeer> stranger_, member_;
  std::set<std::string> members_before_;
};

TEST_F(StrangerTest, NonMemberIsRefusedOnPing) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(false));
  auto stub = PeerStubAs(stranger_->key(), a_);
  v1::Hello hello = stranger_->Hello();
  hello.set_peer_address("127.0.0.1:1");
  for (const v1::Hello* from : {&hello, static_cast<v1::Hello*>(nullptr)}) {
    v1::PingResponse resp;
    grpc::Status s = CallPing(stub.get(), from, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << Describe(s);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "not paired"))
        << s.error_message();
    EXPECT_FALSE(resp.has_self()) << resp.DebugString();
  }
  ExpectStrangerUnknown();
  // A member gets A's Hello.
  auto ok_stub = PeerStubAs(member_->key(), a_);
  v1::Hello mine = member_->Hello();
  v1::PingResponse resp;
  grpc::Status s = CallPing(ok_stub.get(), &mine, &resp);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(resp.self().device_id(), IdBytes(a_->id));
}

TEST_F(StrangerTest, NonMemberIsRefusedOnExchange) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(false));
  v1::ExchangeRequest req;
  *req.mutable_from() = stranger_->Hello();  // knows nothing: send all
  ExchangeResult r = CallExchange(PeerStubAs(stranger_->key(), a_).get(), req);
  EXPECT_EQ(r.status.error_code(), StatusCode::UNAUTHENTICATED)
      << Describe(r.status);
  EXPECT_EQ(r.messages, 0);
  EXPECT_EQ(r.entries, 0);
  ExpectStrangerUnknown();
  // The same request from a member streams A's entry.
  *req.mutable_from() = member_->Hello();
  ExchangeResult ok = CallExchange(PeerStubAs(member_->key(), a_).get(), req);
  ASSERT_TRUE(ok.status.ok()) << Describe(ok.status);
  EXPECT_GE(ok.entries, 1);
}

TEST_F(StrangerTest, NonMemberIsRefusedOnHasKeys) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(false));
  v1::Hello hello = stranger_->Hello();
  for (const v1::Hello* from : {&hello, static_cast<v1::Hello*>(nullptr)}) {
    v1::HasKeysResponse resp;
    grpc::Status s =
        CallHasKeys(PeerStubAs(stranger_->key(), a_).get(), from, key_, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << Describe(s);
    EXPECT_EQ(resp.entries_size(), 0);
  }
  ExpectStrangerUnknown();
  v1::Hello mine = member_->Hello();
  v1::HasKeysResponse resp;
  grpc::Status s =
      CallHasKeys(PeerStubAs(member_->key(), a_).get(), &mine, key_, &resp);
  ASSERT_TRUE(s.ok()) << Describe(s);
  ASSERT_EQ(resp.entries_size(), 1);
  EXPECT_TRUE(resp.entries(0).has());
  EXPECT_EQ(resp.entries(0).size(), bytes_.size());
}

grpc::Status CallWhoHas(v1::Peer::Stub* stub, const v1::Hello& from,
                        std::vector<v1::SidecarKey> keys,
                        v1::PeerWhoHasResponse* resp) {
  v1::PeerWhoHasRequest req;
  *req.mutable_from() = from;
  for (v1::SidecarKey& k : keys) *req.add_keys() = std::move(k);
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  return stub->WhoHas(&ctx, req, resp);
}

// A leaf's delegated lookup: members only, each speaking for itself, with
// bounded and valid keys.
TEST_F(StrangerTest, NonMemberIsRefusedOnWhoHas) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(false));
  v1::PeerWhoHasResponse resp;
  grpc::Status s = CallWhoHas(PeerStubAs(stranger_->key(), a_).get(),
                              stranger_->Hello(), {key_}, &resp);
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << Describe(s);
  EXPECT_EQ(resp.results_size(), 0);
  ExpectStrangerUnknown();

  auto member = PeerStubAs(member_->key(), a_);
  // A member speaking as another device.
  s = CallWhoHas(member.get(), stranger_->Hello(), {key_}, &resp);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << Describe(s);
  v1::SidecarKey bad = key_;
  bad.set_variant("../x");
  s = CallWhoHas(member.get(), member_->Hello(), {key_, bad}, &resp);
  EXPECT_EQ(s.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(s);
  EXPECT_NE(s.error_message().find("keys[1]"), std::string::npos);
  s = CallWhoHas(member.get(), member_->Hello(),
                 std::vector<v1::SidecarKey>(kMaxKeysPerRequest + 1, key_),
                 &resp);
  EXPECT_EQ(s.error_code(), StatusCode::RESOURCE_EXHAUSTED) << Describe(s);

  // The positive control: A names itself for its sidecar.
  resp.Clear();
  s = CallWhoHas(member.get(), member_->Hello(), {key_, RandomKeyProto()},
                 &resp);
  ASSERT_TRUE(s.ok()) << Describe(s);
  ASSERT_EQ(resp.results_size(), 2);
  ASSERT_EQ(resp.results(0).holders_size(), 1);
  EXPECT_EQ(resp.results(1).holders_size(), 0);
  const auto& h = resp.results(0).holders(0);
  ASSERT_LT(h.device(), static_cast<uint32_t>(resp.devices_size()));
  EXPECT_EQ(Uuid::FromBytes(resp.devices(h.device()))->ToString(), a_->id);
  EXPECT_EQ(h.size(), bytes_.size());
}

TEST_F(StrangerTest, NonMemberIsRefusedOnSyncMembers) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(false));
  // It brings its own introduction, signed by itself.
  v1::SyncMembersRequest req;
  *req.mutable_from() = stranger_->Hello();
  *req.add_records() =
      Introduction(stranger_->key(), "stranger", stranger_->key());
  v1::SyncMembersResponse resp;
  grpc::Status s =
      CallSyncMembers(PeerStubAs(stranger_->key(), a_).get(), req, &resp);
  EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << Describe(s);
  EXPECT_EQ(resp.records_size(), 0) << "the library's records leaked";
  ExpectStrangerUnknown();
  // A member may relay that record; it is not accepted either (nobody can
  // introduce itself), and the member gets the library back.
  *req.mutable_from() = member_->Hello();
  v1::SyncMembersResponse ok;
  grpc::Status m =
      CallSyncMembers(PeerStubAs(member_->key(), a_).get(), req, &ok);
  ASSERT_TRUE(m.ok()) << Describe(m);
  EXPECT_EQ(ok.records_size(), 3);
  EXPECT_EQ(MemberSet(a_), members_before_);
}

TEST_F(StrangerTest, NonMemberIsRefusedOnTransferRead) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(true));
  ASSERT_TRUE(TransferAdmits(member_->key(), a_));
  ReadResult r = CallRead(TransferStubAs(stranger_->key(), a_).get(), key_);
  EXPECT_EQ(r.status.error_code(), StatusCode::UNAUTHENTICATED)
      << Describe(r.status);
  EXPECT_EQ(r.chunks, 0);
  EXPECT_EQ(r.bytes.size(), 0u);
  ExpectStrangerUnknown();
  ReadResult ok = CallRead(TransferStubAs(member_->key(), a_).get(), key_);
  ASSERT_TRUE(ok.status.ok()) << Describe(ok.status);
  EXPECT_EQ(ok.bytes, bytes_);
}

// Metrics under the pairing rules: with --metrics_members both services
// give theirs on their peer listeners, to members only.
TEST_F(StrangerTest, NonMemberIsRefusedOnMemberMetrics) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(true, {{"metrics_members", "true"}}));
  ASSERT_TRUE(TransferAdmits(member_->key(), a_));
  for (const std::string& address :
       {a_->avail->address(), a_->xfer->address()}) {
    SCOPED_TRACE(address);
    auto scrape = [&](const DeviceKey& as, v1::ScrapeResponse* resp) {
      auto stub = v1::MemberMetrics::NewStub(
          MakePeerChannel(address, as, a_->cert, TrafficClass::kMetrics));
      grpc::ClientContext ctx;
      SetDeadline(&ctx, absl::Seconds(5));
      return stub->Scrape(&ctx, {}, resp);
    };
    v1::ScrapeResponse refused;
    grpc::Status s = scrape(stranger_->key(), &refused);
    EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << Describe(s);
    EXPECT_EQ(refused.families_size(), 0);
    v1::ScrapeResponse ok;
    s = scrape(member_->key(), &ok);
    ASSERT_TRUE(s.ok()) << Describe(s);
    bool grpc_families = false;
    for (const v1::MetricFamily& f : ok.families()) {
      grpc_families |= f.name() == "grpc_server_handled_total";
    }
    EXPECT_TRUE(grpc_families) << ok.DebugString().substr(0, 2000);
  }
  ExpectStrangerUnknown();
}

TEST_F(StrangerTest, NonMemberIsRefusedOnTransferBatchRead) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices(true));
  ASSERT_TRUE(TransferAdmits(member_->key(), a_));
  BatchResult r =
      CallBatchRead(TransferStubAs(stranger_->key(), a_).get(), {key_, key_});
  EXPECT_EQ(r.status.error_code(), StatusCode::UNAUTHENTICATED)
      << Describe(r.status);
  EXPECT_EQ(r.messages, 0);
  EXPECT_EQ(r.items, 0);
  EXPECT_EQ(r.bytes.size(), 0u);
  ExpectStrangerUnknown();
  BatchResult ok =
      CallBatchRead(TransferStubAs(member_->key(), a_).get(), {key_});
  ASSERT_TRUE(ok.status.ok()) << Describe(ok.status);
  EXPECT_EQ(ok.items, 1);
  EXPECT_EQ(ok.bytes, bytes_);
}

// ---------------------------------------------------------------------------
// 2. A member that claims to be another member (a forged Hello.device_id).

class ForgedHelloTest : public PeerAuthTest {
 protected:
  void SetUpDevices() {
    a_ = Add("a");
    b_ = Add("b");
    ASSERT_NO_FATAL_FAILURE(Start(a_));
    ASSERT_NO_FATAL_FAILURE(Start(b_));
    ASSERT_EQ(Pair(a_->avail.get(), b_->avail.get()), absl::OkStatus());
    b_key_ = Publish(b_, RandomBytes(5000, 2));
    member_ = NewPeer("member");
    ASSERT_TRUE(member_ != nullptr);
    ASSERT_TRUE(member_->JoinLibraryOf(a_->avail.get()).ok());
    // A has B's entry and reaches B where it is.
    ASSERT_TRUE(WaitFor(
        [&] {
          auto p = PeerEntry(a_, b_->id);
          return p && p->online() && p->sidecars() == 1 &&
                 HeldBy(a_, b_key_, b_->id);
        },
        absl::Seconds(5)));
    peer_before_ = *PeerEntry(a_, b_->id);
    member_before_ = *MemberEntry(a_, b_->id);
    ASSERT_EQ(peer_before_.peer_address(), b_->avail->address());
    ASSERT_EQ(member_before_.peer_address(), b_->avail->address());
    members_before_ = MemberSet(a_);
    stub_ = PeerStubAs(member_->key(), a_);
    // The member pretends to be B, somewhere else.
    forged_ = HelloNaming(b_->id, "b-forged", "127.0.0.1:1", "127.0.0.1:2");
    forged_.set_generation(peer_before_.generation() + 7);
  }

  // What A knows of B is what B told it, not what the forger said.
  void ExpectBUnchanged() {
    absl::SleepFor(absl::Milliseconds(300));  // a few ping rounds
    std::optional<v1::PeerInfo> p = PeerEntry(a_, b_->id);
    ASSERT_TRUE(p.has_value());
    EXPECT_EQ(p->peer_address(), peer_before_.peer_address());
    EXPECT_EQ(p->transfer_address(), peer_before_.transfer_address());
    EXPECT_EQ(p->name(), peer_before_.name());
    EXPECT_EQ(p->generation(), peer_before_.generation());
    EXPECT_EQ(p->max_seq(), peer_before_.max_seq());
    EXPECT_EQ(p->sidecars(), 1u);
    EXPECT_TRUE(p->online());
    std::optional<v1::Member> m = MemberEntry(a_, b_->id, true);
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->peer_address(), member_before_.peer_address());
    EXPECT_EQ(m->transfer_address(), member_before_.transfer_address());
    EXPECT_EQ(m->name(), member_before_.name());
    EXPECT_FALSE(m->removed());
    EXPECT_EQ(MemberSet(a_), members_before_);
    EXPECT_EQ(Holders(a_, b_key_), std::vector<std::string>{b_->id});
    // Nothing of the forger's claims under the forger's own id either.
    std::optional<v1::PeerInfo> self =
        PeerEntry(a_, member_->key().device_id().ToString());
    if (self) {
      EXPECT_NE(self->peer_address(), "127.0.0.1:1");
    }
  }

  Device* a_ = nullptr;
  Device* b_ = nullptr;
  v1::SidecarKey b_key_;
  std::unique_ptr<TestPeer> member_;
  std::unique_ptr<v1::Peer::Stub> stub_;
  v1::Hello forged_;
  v1::PeerInfo peer_before_;
  v1::Member member_before_;
  std::set<std::string> members_before_;
};

TEST_F(ForgedHelloTest, MemberClaimingAnotherIdIsDeniedOnPing) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices());
  v1::PingResponse resp;
  grpc::Status s = CallPing(stub_.get(), &forged_, &resp);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "does not match"))
      << s.error_message();
  EXPECT_FALSE(resp.has_self());
  ExpectBUnchanged();
  // Its own Hello is fine: the refusal was about the claim.
  v1::Hello mine = member_->Hello();
  v1::PingResponse ok;
  EXPECT_TRUE(CallPing(stub_.get(), &mine, &ok).ok());
}

TEST_F(ForgedHelloTest, MemberClaimingAnotherIdIsDeniedOnExchange) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices());
  // "I am B and I am far ahead of what you have of me."
  v1::ExchangeRequest req;
  *req.mutable_from() = forged_;
  v1::OriginDigest* d = req.add_digest();
  d->set_device_id(IdBytes(b_->id));
  d->set_generation(peer_before_.generation() + 7);
  d->set_max_seq(1000000);
  ExchangeResult r = CallExchange(stub_.get(), req);
  EXPECT_EQ(r.status.error_code(), StatusCode::PERMISSION_DENIED)
      << Describe(r.status);
  EXPECT_EQ(r.messages, 0);
  EXPECT_EQ(r.entries, 0);
  ExpectBUnchanged();
  // Without any Hello: INVALID_ARGUMENT, nothing sent either.
  v1::ExchangeRequest none;
  ExchangeResult n = CallExchange(stub_.get(), none);
  EXPECT_EQ(n.status.error_code(), StatusCode::INVALID_ARGUMENT)
      << Describe(n.status);
  EXPECT_EQ(n.messages, 0);
}

TEST_F(ForgedHelloTest, MemberClaimingAnotherIdIsDeniedOnSyncMembers) {
  ASSERT_NO_FATAL_FAILURE(SetUpDevices());
  // The member reads the library honestly first (B's record among it).
  v1::SyncMembersRequest honest;
  *honest.mutable_from() = member_->Hello();
  v1::SyncMembersResponse lib;
  grpc::Status h = CallSyncMembers(stub_.get(), honest, &lib);
  ASSERT_TRUE(h.ok()) << Describe(h);
  std::optional<v1::MemberRecord> b_record;
  for (const auto& r : lib.records()) {
    v1::Introduction intro;
    ASSERT_TRUE(intro.ParseFromString(r.introduction().body()));
    absl::StatusOr<DeviceCertificate> c =
        DeviceCertificate::Parse(intro.certificate());
    if (c.ok() && c->device_id.ToString() == b_->id) b_record = r;
  }
  ASSERT_TRUE(b_record.has_value());
  // As "B", it sends a removal of B and a stranger's self-introduction,
  // with B's address hints rewritten.
  v1::SyncMembersRequest req;
  *req.mutable_from() = forged_;
  v1::MemberRecord removal =
      WithRemoval(*b_record, b_->cert.device_id, member_->key());
  removal.set_peer_address("127.0.0.1:1");
  removal.set_transfer_address("127.0.0.1:2");
  *req.add_records() = removal;
  auto stranger = NewPeer("stranger");
  ASSERT_TRUE(stranger != nullptr);
  *req.add_records() = Introduction(stranger->key(), "s", stranger->key());
  v1::SyncMembersResponse resp;
  grpc::Status s = CallSyncMembers(stub_.get(), req, &resp);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << Describe(s);
  EXPECT_EQ(resp.records_size(), 0);
  // Without a Hello at all: INVALID_ARGUMENT, nothing merged.
  req.clear_from();
  v1::SyncMembersResponse none;
  grpc::Status n = CallSyncMembers(stub_.get(), req, &none);
  EXPECT_EQ(n.error_code(), StatusCode::INVALID_ARGUMENT) << Describe(n);
  EXPECT_EQ(none.records_size(), 0);
  ExpectBUnchanged();
  EXPECT_FALSE(MemberIds(b_).empty());
  EXPECT_TRUE(MemberIds(b_).contains(b_->id));
}

// ---------------------------------------------------------------------------
// 3. The local API is not on the network.

TEST_F(PeerAuthTest, LocalApiIsNotServedOnThePeerListeners) {
  Device* a = Add("a", /*transfer=*/true);
  ASSERT_NO_FATAL_FAILURE(Start(a));
  auto member = NewPeer("member");
  ASSERT_TRUE(member != nullptr);
  ASSERT_TRUE(member->JoinLibraryOf(a->avail.get()).ok());
  ASSERT_TRUE(TransferAdmits(member->key(), a));
  v1::SidecarKey key = RandomKeyProto();
  auto deadline = [](grpc::ClientContext* c) {
    SetDeadline(c, absl::Seconds(5));
  };

  // The Availability service over mutual TLS, as a member: not there.
  for (int mode = 0; mode < 2; ++mode) {
    const bool tls = mode == 0;
    const StatusCode want =
        tls ? StatusCode::UNIMPLEMENTED : StatusCode::UNAVAILABLE;
    auto api = v1::Availability::NewStub(
        tls ? MakePeerChannel(a->avail->address(), member->key(), a->cert)
            : MakeLocalChannel(a->avail->address()));
    SCOPED_TRACE(tls ? "availability, mutual TLS" : "availability, plaintext");
    {
      v1::RegisterRequest req;
      v1::LocalSidecar* l = req.add_sidecars();
      *l->mutable_key() = key;
      l->set_size(3);
      l->set_sha256(std::string(DigestBytes(Sha256Of("abc"))));
      l->set_status(v1::SIDECAR_STATUS_READY);
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::RegisterResponse resp;
      grpc::Status s = api->Register(&ctx, req, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
      EXPECT_EQ(resp.registered(), 0u);
    }
    {
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::ListLocalResponse resp;
      grpc::Status s = api->ListLocal(&ctx, {}, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
      EXPECT_EQ(resp.sidecars_size(), 0);
    }
    {
      v1::WhoHasRequest req;
      *req.add_keys() = key;
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::WhoHasResponse resp;
      grpc::Status s = api->WhoHas(&ctx, req, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
      EXPECT_EQ(resp.results_size(), 0);
    }
    {
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::CreateInviteResponse resp;
      grpc::Status s = api->CreateInvite(&ctx, {}, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
      EXPECT_TRUE(resp.code().empty());
    }
    {
      v1::UnpairRequest req;
      req.set_device(member->key().device_id().ToString());
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::UnpairResponse resp;
      grpc::Status s = api->Unpair(&ctx, req, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
    }
    {
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::ListMembersResponse resp;
      grpc::Status s = api->ListMembers(&ctx, {}, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
      EXPECT_EQ(resp.members_size(), 0);
    }
  }
  // The Transfer service likewise.
  for (int mode = 0; mode < 2; ++mode) {
    const bool tls = mode == 0;
    const StatusCode want =
        tls ? StatusCode::UNIMPLEMENTED : StatusCode::UNAVAILABLE;
    auto api = v1::Transfer::NewStub(
        tls ? MakePeerChannel(a->xfer->address(), member->key(), a->cert)
            : MakeLocalChannel(a->xfer->address()));
    SCOPED_TRACE(tls ? "transfer, mutual TLS" : "transfer, plaintext");
    {
      v1::FetchRequest req;
      *req.add_keys() = key;
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::FetchResponse resp;
      grpc::Status s = api->Fetch(&ctx, req, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
      EXPECT_EQ(resp.results_size(), 0);
    }
    {
      grpc::ClientContext ctx;
      deadline(&ctx);
      v1::ListJobsResponse resp;
      grpc::Status s = api->ListJobs(&ctx, {}, &resp);
      EXPECT_EQ(s.error_code(), want) << Describe(s);
      EXPECT_EQ(resp.jobs_size(), 0);
    }
  }
  // Nothing happened through them: no sidecar, no job, the member remains.
  {
    grpc::ClientContext ctx;
    deadline(&ctx);
    v1::ListLocalResponse resp;
    ASSERT_TRUE(a->avail->api()->ListLocal(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.sidecars_size(), 0);
  }
  {
    grpc::ClientContext ctx;
    deadline(&ctx);
    v1::ListJobsResponse resp;
    ASSERT_TRUE(a->xfer->api()->ListJobs(&ctx, {}, &resp).ok());
    EXPECT_EQ(resp.jobs_size(), 0);
  }
  EXPECT_TRUE(MemberIds(a).contains(member->key().device_id().ToString()));
  // And the peer API itself answers the member over TLS (the listener was
  // up all along).
  v1::Hello mine = member->Hello();
  v1::PingResponse pong;
  grpc::Status s = CallPing(PeerStubAs(member->key(), a).get(), &mine, &pong);
  EXPECT_TRUE(s.ok()) << Describe(s);
}

TEST_F(PeerAuthTest, LocalListenerOnANetworkAddressIsRefusedAtStart) {
  Device* a = Add("a", /*transfer=*/true);
  ASSERT_NE(a, nullptr);
  std::string port_file = absl::StrCat(dir_, "/local-net.port");
  Run r = RunToExit(AvailabilityArgv(a, port_file),
                    {"--local_listen=0.0.0.0:0"}, "avail-local-net", port_file);
  std::cerr << "availability with --local_listen=0.0.0.0:0: exit " << r.status
            << " after " << r.took << "\n";
  EXPECT_NE(r.status, 0) << r.log;
  EXPECT_FALSE(r.port_file_written) << r.log;
  EXPECT_TRUE(absl::StrContains(r.log, "0.0.0.0:0")) << r.log;
  EXPECT_TRUE(absl::StrContains(r.log, "on the network")) << r.log;
  EXPECT_TRUE(absl::StrContains(r.log, "unix socket")) << r.log;

  // The transfer service too (the key exists now: the first start made it).
  ASSERT_TRUE(
      std::filesystem::exists(a->avail->state_dir() + "/" + kDeviceKeyFile));
  std::string xport = absl::StrCat(dir_, "/xfer-local-net.port");
  Run x = RunToExit(
      {TRANSFER_BIN, "--listen=127.0.0.1:0",
       absl::StrCat("--db=", a->xfer->conninfo()),
       absl::StrCat("--sidecar_root=", a->avail->sidecar_root()),
       absl::StrCat("--state_dir=", a->avail->state_dir()),
       absl::StrCat("--port_file=", xport), "--local_listen=0.0.0.0:0"},
      {}, "xfer-local-net", xport);
  EXPECT_NE(x.status, 0) << x.log;
  EXPECT_FALSE(x.port_file_written) << x.log;
  EXPECT_TRUE(absl::StrContains(x.log, "on the network")) << x.log;
}

// ---------------------------------------------------------------------------
// 4. Another key claiming a member's identity; a pinned channel that meets
// another key.

TEST_F(PeerAuthTest, MemberIdentityWithAnotherKeyIsRefused) {
  Device* a = Add("a");
  ASSERT_NO_FATAL_FAILURE(Start(a));
  auto p1 = NewPeer("p1");
  auto p2 = NewPeer("p2");
  ASSERT_TRUE(p1 && p2);
  ASSERT_TRUE(p1->JoinLibraryOf(a->avail.get()).ok());
  const std::string p1_id = p1->key().device_id().ToString();
  // P2 says it is P1 (same name, same id) but holds its own key.
  v1::Hello claim = HelloNaming(p1_id, p1->name(), "127.0.0.1:1");
  ASSERT_EQ(claim.device_id(), p1->Hello().device_id());
  ASSERT_NE(p2->key().device_id(), p1->key().device_id());
  std::set<std::string> members_before = MemberSet(a);
  auto stub = PeerStubAs(p2->key(), a);
  {
    v1::PingResponse resp;
    grpc::Status s = CallPing(stub.get(), &claim, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << Describe(s);
    EXPECT_FALSE(resp.has_self());
  }
  {
    v1::ExchangeRequest req;
    *req.mutable_from() = claim;
    ExchangeResult r = CallExchange(stub.get(), req);
    EXPECT_EQ(r.status.error_code(), StatusCode::UNAUTHENTICATED)
        << Describe(r.status);
    EXPECT_EQ(r.messages, 0);
  }
  {
    v1::SyncMembersRequest req;
    *req.mutable_from() = claim;
    v1::SyncMembersResponse resp;
    grpc::Status s = CallSyncMembers(stub.get(), req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::UNAUTHENTICATED) << Describe(s);
    EXPECT_EQ(resp.records_size(), 0);
  }
  // Nor may it pair in P1's name with a fresh code: the Hello must match
  // the key of its connection.
  {
    absl::StatusOr<PairingCode> code = PairingCode::Parse(Invite(a));
    ASSERT_TRUE(code.ok());
    v1::JoinRequest req;
    *req.mutable_from() = claim;
    req.set_proof(code->JoinProof(p2->key().certificate().key_sha256,
                                  a->cert.key_sha256));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::JoinResponse resp;
    grpc::Status s = stub->Join(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << Describe(s);
    EXPECT_EQ(resp.records_size(), 0);
  }
  EXPECT_EQ(MemberSet(a), members_before);
  std::optional<v1::Member> m = MemberEntry(a, p1_id);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->fingerprint(), p1->key().certificate().Fingerprint());
  EXPECT_NE(m->peer_address(), "127.0.0.1:1");
  EXPECT_FALSE(PeerIds(a).contains(p2->key().device_id().ToString()));
  // The real P1 is let in.
  v1::Hello real = p1->Hello();
  v1::PingResponse pong;
  EXPECT_TRUE(CallPing(PeerStubAs(p1->key(), a).get(), &real, &pong).ok());
}

TEST_F(PeerAuthTest, ChannelPinnedToADeviceFailsAgainstAnotherKey) {
  Device* a = Add("a");
  Device* b = Add("b");
  ASSERT_NO_FATAL_FAILURE(Start(a));
  ASSERT_NO_FATAL_FAILURE(Start(b));
  ASSERT_EQ(Pair(a->avail.get(), b->avail.get()), absl::OkStatus());
  auto member = NewPeer("member");
  ASSERT_TRUE(member != nullptr);
  ASSERT_TRUE(member->JoinLibraryOf(a->avail.get()).ok());
  // B trusts the member too (it learned it from A).
  const std::string mid = member->key().device_id().ToString();
  ASSERT_TRUE(
      WaitFor([&] { return MemberIds(b).contains(mid); }, absl::Seconds(5)));
  v1::Hello hello = member->Hello();
  v1::PingResponse pong;
  ASSERT_TRUE(CallPing(PeerStubAs(member->key(), b).get(), &hello, &pong).ok());

  // Pinned to A, but B (a real member, another key) answers there.
  auto to_b = v1::Peer::NewStub(
      MakePeerChannel(b->avail->address(), member->key(), a->cert));
  v1::PingResponse resp;
  grpc::Status s = CallPing(to_b.get(), &hello, &resp);
  EXPECT_EQ(s.error_code(), StatusCode::UNAVAILABLE) << Describe(s);
  EXPECT_FALSE(resp.has_self());

  // Pinned to A, but an impostor with its own key, which would let the
  // member in and answer anything, answers there: no call reaches it.
  auto impostor_key = DeviceKey::Create(dir_ + "/impostor", "impostor");
  ASSERT_TRUE(impostor_key.ok()) << impostor_key.status();
  PeerTrust trust;
  trust.Set({member->key().certificate()});
  CountingPeer impostor;
  ServerHost host(PeerListener{
      "127.0.0.1:0", &*impostor_key, &trust, {"/sidecar.v1.Peer/Join"}});
  host.AddService(&impostor);
  ASSERT_TRUE(host.Start().ok());
  std::string at = absl::StrCat("127.0.0.1:", host.port());
  auto to_impostor =
      v1::Peer::NewStub(MakePeerChannel(at, member->key(), a->cert));
  v1::PingResponse r2;
  grpc::Status s2 = CallPing(to_impostor.get(), &hello, &r2);
  EXPECT_EQ(s2.error_code(), StatusCode::UNAVAILABLE) << Describe(s2);
  v1::SyncMembersRequest sreq;
  *sreq.mutable_from() = hello;
  v1::SyncMembersResponse sresp;
  EXPECT_EQ(CallSyncMembers(to_impostor.get(), sreq, &sresp).error_code(),
            StatusCode::UNAVAILABLE);
  EXPECT_EQ(impostor.calls.load(), 0);
  // Pinned to the impostor itself, the same channel setup works: the
  // failure above was the pin.
  auto honest = v1::Peer::NewStub(
      MakePeerChannel(at, member->key(), impostor_key->certificate()));
  EXPECT_TRUE(CallPing(honest.get(), &hello, &r2).ok());
  EXPECT_EQ(impostor.calls.load(), 1);
  host.Shutdown(absl::ZeroDuration());
}

// ---------------------------------------------------------------------------
// 5. Pairing.

TEST_F(PeerAuthTest, RightCodePairsBothSidesWithTheSameFingerprints) {
  Device* a = Add("a");
  Device* b = Add("b");
  ASSERT_NO_FATAL_FAILURE(Start(a));
  ASSERT_NO_FATAL_FAILURE(Start(b));
  EXPECT_EQ(MemberIds(a), std::set<std::string>{a->id});
  EXPECT_EQ(MemberIds(b), std::set<std::string>{b->id});
  v1::JoinLibraryResponse joined;
  grpc::Status s = JoinWithCode(b, Invite(a), a->avail->address(), &joined);
  ASSERT_TRUE(s.ok()) << Describe(s);
  EXPECT_EQ(joined.inviter().device_id(), a->id);
  EXPECT_EQ(joined.inviter().fingerprint(), a->cert.Fingerprint());
  EXPECT_EQ(joined.members(), 2u);
  for (auto [self, other] : {std::pair{a, b}, std::pair{b, a}}) {
    SCOPED_TRACE(self->name);
    auto m = WaitFor(
        [&, self = self, other = other] {
          return MemberEntry(self, other->id).has_value();
        },
        absl::Seconds(5));
    ASSERT_TRUE(m.has_value());
    v1::Member them = *MemberEntry(self, other->id);
    v1::Member me = *MemberEntry(self, self->id);
    // The same fingerprint on both sides, and that of the key on disk.
    EXPECT_EQ(them.fingerprint(), other->cert.Fingerprint());
    EXPECT_EQ(them.fingerprint(), MemberEntry(other, other->id)->fingerprint());
    EXPECT_EQ(me.fingerprint(), self->cert.Fingerprint());
    EXPECT_EQ(them.certificate(), other->cert.der);
    // A admitted B; B vouched for A (its founder record is self-signed),
    // and both sides agree on who introduced whom.
    EXPECT_EQ(MemberEntry(self, b->id)->admitted_by(), a->id);
    // (The joiner's vouch reaches the inviter by gossip.)
    EXPECT_TRUE(WaitFor(
        // Structured bindings are captured by copy: clang 14 does not
        // capture them implicitly.
        [&, self = self, other = other] {
          return MemberEntry(self, other->id)->admitted_by() ==
                 MemberEntry(other, other->id)->admitted_by();
        },
        absl::Seconds(5)))
        << MemberEntry(self, other->id)->admitted_by() << " at " << self->name
        << ", " << MemberEntry(other, other->id)->admitted_by() << " at "
        << other->name;
    EXPECT_TRUE(me.self());
    EXPECT_FALSE(them.self());
    EXPECT_FALSE(them.removed());
    EXPECT_EQ(Members(self).members_size(), 2);
  }
  // And they talk.
  ASSERT_TRUE(WaitFor(
      [&] {
        auto p = PeerEntry(b, a->id);
        auto q = PeerEntry(a, b->id);
        return p && p->online() && q && q->online();
      },
      absl::Seconds(5)));
}

TEST_F(PeerAuthTest, CodeOfAnotherDeviceIsRefusedBeforeAnythingIsSent) {
  Device* a = Add("a");
  Device* b = Add("b");
  Device* c = Add("c");
  for (Device* d : {a, b, c}) ASSERT_NO_FATAL_FAILURE(Start(d));
  std::string c_code = Invite(c);
  std::set<std::string> a_before = MemberSet(a);
  grpc::Status s = JoinWithCode(b, c_code, a->avail->address());
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(),
                                "is not the one that made this code"))
      << s.error_message();
  // A code with one secret bit flipped is not A's either.
  absl::StatusOr<PairingCode> a_code = PairingCode::Parse(Invite(a));
  ASSERT_TRUE(a_code.ok());
  PairingCode typo = *a_code;
  typo.secret[0] ^= 1;
  grpc::Status t = JoinWithCode(b, typo.ToString(), a->avail->address());
  EXPECT_EQ(t.error_code(), StatusCode::PERMISSION_DENIED) << Describe(t);
  EXPECT_TRUE(absl::StrContains(t.error_message(), "is not the one"))
      << t.error_message();
  EXPECT_EQ(MemberSet(a), a_before);
  EXPECT_EQ(MemberIds(b), std::set<std::string>{b->id});
  EXPECT_EQ(MemberIds(c), std::set<std::string>{c->id});
  // Nothing was sent: both codes are still good where they belong.
  grpc::Status ok = JoinWithCode(b, c_code, c->avail->address());
  EXPECT_TRUE(ok.ok()) << Describe(ok);
  grpc::Status ok2 = JoinWithCode(b, a_code->ToString(), a->avail->address());
  EXPECT_TRUE(ok2.ok()) << Describe(ok2);
}

TEST_F(PeerAuthTest, WrongProofIsRefusedAndTheCodeStaysGood) {
  Device* a = Add("a");
  Device* b = Add("b");
  ASSERT_NO_FATAL_FAILURE(Start(a));
  ASSERT_NO_FATAL_FAILURE(Start(b));
  std::string code = Invite(a);  // a live code the guesses do not know
  auto guesser = NewPeer("guesser");
  ASSERT_TRUE(guesser != nullptr);
  absl::StatusOr<DeviceCertificate> cert = FetchPeerCertificate(
      a->avail->address(), guesser->key(), absl::Seconds(5));
  ASSERT_TRUE(cert.ok()) << cert.status();
  ASSERT_EQ(cert->der, a->cert.der);
  auto stub = PeerStubAs(guesser->key(), a);
  std::set<std::string> before = MemberSet(a);
  for (int i = 0; i < 3; ++i) {
    v1::JoinRequest req;
    *req.mutable_from() = guesser->Hello();
    req.set_proof(RandomBytes(32, 100 + i));
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::JoinResponse resp;
    grpc::Status s = stub->Join(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << Describe(s);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "wrong pairing code"))
        << s.error_message();
    EXPECT_TRUE(resp.proof().empty());
    EXPECT_EQ(resp.records_size(), 0) << "the library leaked";
  }
  EXPECT_EQ(MemberSet(a), before);
  v1::Hello hello = guesser->Hello();
  v1::PingResponse pong;
  EXPECT_EQ(CallPing(stub.get(), &hello, &pong).error_code(),
            StatusCode::UNAUTHENTICATED);
  // The real code still pairs a device.
  grpc::Status ok = JoinWithCode(b, code, a->avail->address());
  EXPECT_TRUE(ok.ok()) << Describe(ok);
  EXPECT_TRUE(MemberIds(a).contains(b->id));
}

TEST_F(PeerAuthTest, ExpiredCodeIsRefused) {
  Device* a = Add("a");
  Device* b = Add("b");
  ASSERT_NO_FATAL_FAILURE(Start(a));
  ASSERT_NO_FATAL_FAILURE(Start(b));
  std::string code = Invite(a, /*ttl_seconds=*/1);
  absl::SleepFor(absl::Milliseconds(2100));
  grpc::Status s = JoinWithCode(b, code, a->avail->address());
  EXPECT_EQ(s.error_code(), StatusCode::FAILED_PRECONDITION) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(), "expired"))
      << s.error_message();
  EXPECT_EQ(MemberIds(a), std::set<std::string>{a->id});
  EXPECT_EQ(MemberIds(b), std::set<std::string>{b->id});
}

TEST_F(PeerAuthTest, UsedCodeIsRefused) {
  Device* a = Add("a");
  Device* b = Add("b");
  Device* c = Add("c");
  for (Device* d : {a, b, c}) ASSERT_NO_FATAL_FAILURE(Start(d));
  std::string code = Invite(a);
  grpc::Status first = JoinWithCode(b, code, a->avail->address());
  ASSERT_TRUE(first.ok()) << Describe(first);
  grpc::Status again = JoinWithCode(c, code, a->avail->address());
  EXPECT_EQ(again.error_code(), StatusCode::FAILED_PRECONDITION)
      << Describe(again);
  EXPECT_TRUE(absl::StrContains(again.error_message(), "already used"))
      << again.error_message();
  EXPECT_EQ(MemberIds(a), (std::set<std::string>{a->id, b->id}));
  EXPECT_EQ(MemberIds(c), std::set<std::string>{c->id});
  // B using it a second time is refused as well.
  grpc::Status twice = JoinWithCode(b, code, a->avail->address());
  EXPECT_EQ(twice.error_code(), StatusCode::FAILED_PRECONDITION)
      << Describe(twice);
}

TEST_F(PeerAuthTest, KeySwappingManInTheMiddleIsDetected) {
  Device* a = Add("a");
  Device* b = Add("b");
  ASSERT_NO_FATAL_FAILURE(Start(a));
  ASSERT_NO_FATAL_FAILURE(Start(b));
  // The man in the middle terminates TLS with its own key and would take
  // any Join.
  auto mitm_key = DeviceKey::Create(dir_ + "/mitm", "mitm");
  ASSERT_TRUE(mitm_key.ok()) << mitm_key.status();
  PeerTrust trust;
  CountingPeer mitm;
  ServerHost host(PeerListener{
      "127.0.0.1:0", &*mitm_key, &trust, {"/sidecar.v1.Peer/Join"}});
  host.AddService(&mitm);
  ASSERT_TRUE(host.Start().ok());
  const std::string mitm_address = absl::StrCat("127.0.0.1:", host.port());

  std::set<std::string> a_before = MemberSet(a);
  std::string code = Invite(a);
  grpc::Status s = JoinWithCode(b, code, mitm_address);
  EXPECT_EQ(s.error_code(), StatusCode::PERMISSION_DENIED) << Describe(s);
  EXPECT_TRUE(absl::StrContains(s.error_message(),
                                "is not the one that made this code"))
      << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "nothing was sent"))
      << s.error_message();
  EXPECT_EQ(mitm.joins.load(), 0) << "the proof went to the man in the middle";
  EXPECT_EQ(mitm.calls.load(), 0);
  EXPECT_EQ(MemberSet(a), a_before);
  EXPECT_EQ(MemberIds(b), std::set<std::string>{b->id});
  // A relay that passes the bytes through (keys untouched) is harmless:
  // the same code pairs through it.
  auto relay = TcpProxy::Start("127.0.0.1", a->avail->port());
  ASSERT_TRUE(relay.ok()) << relay.status();
  grpc::Status ok = JoinWithCode(b, code, (*relay)->address());
  EXPECT_TRUE(ok.ok()) << Describe(ok);
  EXPECT_TRUE(MemberIds(a).contains(b->id));
  EXPECT_EQ(mitm.calls.load(), 0);
  host.Shutdown(absl::ZeroDuration());
}

TEST_F(PeerAuthTest, PairingSurvivesRestartsOfBothServicesAndPostgres) {
  Device* a = Add("a");
  Device* b = Add("b");
  // A short drain: nothing is in flight, and an idle graceful stop
  // otherwise takes about 5 s per process.
  ASSERT_NO_FATAL_FAILURE(Start(a, {{"drain_timeout", "1s"}}));
  ASSERT_NO_FATAL_FAILURE(Start(b, {{"drain_timeout", "1s"}}));
  ASSERT_EQ(Pair(a->avail.get(), b->avail.get()), absl::OkStatus());
  std::set<std::string> a_members = MemberSet(a);
  std::set<std::string> b_members = MemberSet(b);
  ASSERT_EQ(a_members.size(), 2u);
  ASSERT_EQ(a_members, b_members);
  const int a_port = a->avail->port();
  const int b_port = b->avail->port();

  // Both stop gracefully (at once), then PostgreSQL restarts.
  absl::Time t0 = absl::Now();
  EXPECT_EQ(a->avail->Stop(), 0);
  EXPECT_EQ(b->avail->Stop(), 0);
  std::cerr << "graceful stops of A and B took " << absl::Now() - t0 << "\n";
  ASSERT_TRUE(server_->Restart().ok());
  // They come back where they were (a device keeps its port; tests bind
  // port 0 only for the first start).
  ASSERT_NO_FATAL_FAILURE(
      Start(a, {{"listen", absl::StrCat("127.0.0.1:", a_port)}}));
  ASSERT_NO_FATAL_FAILURE(
      Start(b, {{"listen", absl::StrCat("127.0.0.1:", b_port)}}));
  EXPECT_EQ(MemberSet(a), a_members);
  EXPECT_EQ(MemberSet(b), b_members);
  EXPECT_EQ(MemberEntry(a, b->id)->fingerprint(), b->cert.Fingerprint());
  EXPECT_EQ(MemberEntry(b, a->id)->fingerprint(), a->cert.Fingerprint());
  // Gossip works: each resolves what the other registers, REMOTE.
  v1::SidecarKey on_a = Publish(a, RandomBytes(4000, 3));
  v1::SidecarKey on_b = Publish(b, RandomBytes(4000, 4));
  auto t = WaitFor(
      [&] {
        return OffersSource(b, on_a, a->id) && OffersSource(a, on_b, b->id);
      },
      absl::Seconds(5));
  EXPECT_TRUE(t.has_value()) << "no gossip after the restarts";
  if (t) std::cerr << "gossip after the restarts within " << *t << "\n";
}

// ---------------------------------------------------------------------------
// 6. The library: a member paired with another member only is trusted.

TEST_F(PeerAuthTest, MemberLearnedThroughTheLibraryIsFetchedFromDirectly) {
  Device* a = Add("a", true);
  Device* b = Add("b", true);
  Device* c = Add("c", true);
  for (Device* d : {a, b, c}) ASSERT_NO_FATAL_FAILURE(Start(d));
  ASSERT_EQ(Pair(b->avail.get(), a->avail.get()), absl::OkStatus());
  ASSERT_EQ(Pair(b->avail.get(), c->avail.get()), absl::OkStatus());
  // C knows A (and A knows C), both introduced by B.
  ASSERT_TRUE(WaitFor(
      [&] {
        return MemberIds(c).contains(a->id) && MemberIds(a).contains(c->id);
      },
      absl::Seconds(5)));
  EXPECT_EQ(MemberEntry(c, a->id)->admitted_by(), b->id);
  EXPECT_EQ(MemberEntry(a, c->id)->admitted_by(), b->id);
  EXPECT_EQ(MemberEntry(c, a->id)->fingerprint(), a->cert.Fingerprint());

  std::string bytes = RandomBytes(60000, 5);
  v1::SidecarKey key = Publish(a, bytes);
  ASSERT_TRUE(
      WaitFor([&] { return OffersSource(c, key, a->id); }, absl::Seconds(5)))
      << "C never offered A as a source";
  // A's transfer service lets C in (from A's member list) before we fetch.
  absl::StatusOr<DeviceKey> c_key = DeviceKey::Load(c->avail->state_dir());
  ASSERT_TRUE(c_key.ok()) << c_key.status();
  ASSERT_TRUE(TransferAdmits(*c_key, a));
  for (Device* d : {a, b, c}) d->proxy->ResetCounters();

  v1::FetchRequest req;
  *req.add_keys() = key;
  req.set_priority(v1::PRIORITY_INTERACTIVE);
  v1::FetchResponse resp;
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    grpc::Status s = c->xfer->api()->Fetch(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
  }
  ASSERT_EQ(resp.results_size(), 1);
  ASSERT_EQ(resp.results(0).outcome(), v1::FetchResult::OUTCOME_QUEUED)
      << resp.results(0).reason();
  v1::JobStatus last;
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(20));
    v1::WatchJobRequest w;
    w.set_job_id(resp.results(0).job_id());
    auto reader = c->xfer->api()->WatchJob(&ctx, w);
    v1::JobStatus st;
    while (reader->Read(&st)) last = st;
    reader->Finish();
  }
  ASSERT_EQ(last.state(), v1::JOB_STATE_DONE) << last.last_error();
  EXPECT_EQ(ReadAll(last.local_path()), bytes);
  EXPECT_EQ(last.attempts(), 1u) << last.last_error();
  // The bytes came from A directly, nothing through B.
  std::cerr << "A sent " << a->proxy->bytes_down() << " B, B sent "
            << b->proxy->bytes_down() << " B\n";
  EXPECT_GE(a->proxy->bytes_down(), bytes.size());
  EXPECT_EQ(b->proxy->bytes_down(), 0u);
  EXPECT_EQ(b->proxy->bytes_up(), 0u);
  EXPECT_EQ(Resolve(c, key).outcome(), v1::ResolveResponse::OUTCOME_LOCAL);
}

// ---------------------------------------------------------------------------
// 7. Unpair.

TEST_F(PeerAuthTest, UnpairedDeviceIsRefusedAndForgottenEverywhere) {
  Device* a = Add("a", true);
  Device* b = Add("b", true);
  Device* c = Add("c", true);
  for (Device* d : {a, b, c}) ASSERT_NO_FATAL_FAILURE(Start(d));
  ASSERT_EQ(Pair(a->avail.get(), b->avail.get()), absl::OkStatus());
  ASSERT_EQ(Pair(a->avail.get(), c->avail.get()), absl::OkStatus());
  absl::StatusOr<DeviceKey> c_key = DeviceKey::Load(c->avail->state_dir());
  ASSERT_TRUE(c_key.ok()) << c_key.status();
  ASSERT_EQ(c_key->device_id().ToString(), c->id);
  v1::Hello c_hello = HelloOf(*c_key, c->avail->name());
  c_hello.set_peer_address(c->avail->address());

  std::string a_bytes = RandomBytes(9000, 6), b_bytes = RandomBytes(9000, 7);
  v1::SidecarKey on_a = Publish(a, a_bytes);
  v1::SidecarKey on_b = Publish(b, b_bytes);
  v1::SidecarKey on_c = Publish(c, RandomBytes(9000, 8));

  auto ping_code = [&](Device* d) {
    v1::PingResponse resp;
    return CallPing(PeerStubAs(*c_key, d).get(), &c_hello, &resp).error_code();
  };
  auto a_xfer = TransferStubAs(*c_key, a);
  auto b_xfer = TransferStubAs(*c_key, b);
  // Before: C is in everywhere.
  ASSERT_TRUE(WaitFor(
      [&] {
        return ping_code(a) == StatusCode::OK &&
               ping_code(b) == StatusCode::OK && HeldBy(a, on_c, c->id) &&
               HeldBy(b, on_c, c->id) && OffersSource(a, on_c, c->id) &&
               OffersSource(b, on_c, c->id) &&
               CallRead(a_xfer.get(), on_a).status.ok() &&
               CallRead(b_xfer.get(), on_b).status.ok();
      },
      absl::Seconds(8)))
      << "C was never fully in";
  EXPECT_EQ(CallRead(a_xfer.get(), on_a).bytes, a_bytes);

  // A unpairs C.
  {
    v1::UnpairRequest req;
    req.set_device(c->id);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    v1::UnpairResponse resp;
    grpc::Status s = a->avail->api()->Unpair(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << Describe(s);
    EXPECT_EQ(resp.removed().device_id(), c->id);
    EXPECT_TRUE(resp.removed().removed());
  }
  const absl::Time unpaired = absl::Now();
  auto within = [&](const char* what, const std::function<bool()>& cond) {
    absl::Duration left = unpaired + absl::Seconds(3) - absl::Now();
    auto t = WaitFor(cond, std::max(left, absl::Milliseconds(1)));
    EXPECT_TRUE(t.has_value()) << what << " not within 3 s of the unpair";
    std::cerr << what << ": " << (absl::Now() - unpaired) << " after unpair\n";
  };
  within("A refuses C's ping",
         [&] { return ping_code(a) == StatusCode::UNAUTHENTICATED; });
  within("B refuses C's ping",
         [&] { return ping_code(b) == StatusCode::UNAUTHENTICATED; });
  within("A forgets C's entries", [&] { return Holders(a, on_c).empty(); });
  within("B forgets C's entries", [&] { return Holders(b, on_c).empty(); });
  within("A does not offer C", [&] { return !OffersSource(a, on_c, c->id); });
  within("B does not offer C", [&] { return !OffersSource(b, on_c, c->id); });
  within("A's transfer refuses C", [&] {
    return CallRead(a_xfer.get(), on_a).status.error_code() ==
           StatusCode::UNAUTHENTICATED;
  });
  within("B's transfer refuses C", [&] {
    return CallRead(b_xfer.get(), on_b).status.error_code() ==
           StatusCode::UNAUTHENTICATED;
  });
  // It stays that way (C is still running and calling them).
  absl::SleepFor(absl::Milliseconds(600));
  EXPECT_EQ(ping_code(a), StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(ping_code(b), StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Holders(a, on_c).empty());
  EXPECT_TRUE(Holders(b, on_c).empty());
  for (Device* d : {a, b}) {
    EXPECT_NE(Resolve(d, on_c).outcome(), v1::ResolveResponse::OUTCOME_REMOTE);
    ReadResult r =
        CallRead(d == a ? a_xfer.get() : b_xfer.get(), d == a ? on_a : on_b);
    EXPECT_EQ(r.status.error_code(), StatusCode::UNAUTHENTICATED);
    EXPECT_TRUE(r.bytes.empty());
    EXPECT_FALSE(MemberIds(d).contains(c->id));
    std::optional<v1::Member> m = MemberEntry(d, c->id, true);
    ASSERT_TRUE(m.has_value()) << d->name;
    EXPECT_TRUE(m->removed());
    EXPECT_EQ(m->removed_by(), a->id);
  }
  // A and B still work with each other.
  EXPECT_TRUE(OffersSource(b, on_a, a->id));
  EXPECT_TRUE(OffersSource(a, on_b, b->id));
}

// ---------------------------------------------------------------------------
// 7b. A member that lies about a third device changes nothing: relayed
// state is taken only if its origin signed it (services/availability/
// state_hash.h).

TEST_F(PeerAuthTest, MemberCannotChangeWhatOthersBelieveAThirdDeviceHolds) {
  Device* a = Add("a");
  Device* b = Add("b");
  for (Device* d : {a, b}) ASSERT_NO_FATAL_FAILURE(Start(d));
  ASSERT_EQ(Pair(a->avail.get(), b->avail.get()), absl::OkStatus());
  std::vector<v1::SidecarKey> keys;
  for (int i = 0; i < 3; ++i) keys.push_back(Publish(a, RandomBytes(1000, i)));
  auto b_lists_all = [&] {
    for (const auto& k : keys) {
      if (!HeldBy(b, k, a->id)) return false;
    }
    return true;
  };
  ASSERT_TRUE(WaitFor(b_lists_all, absl::Seconds(5)));

  // M, a member (joined through A), asks A for its state, as any member
  // may: A's answer carries A's signed head.
  std::unique_ptr<TestPeer> m = NewPeer("liar");
  ASSERT_NE(m, nullptr);
  ASSERT_EQ(m->JoinLibraryOf(a->avail.get()), absl::OkStatus());
  const std::string m_id = m->key().device_id().ToString();
  ASSERT_TRUE(
      WaitFor([&] { return MemberIds(b).contains(m_id); }, absl::Seconds(5)));
  v1::OriginInfo victim;
  std::optional<availability::Entry> held;
  {
    auto to_a = PeerStubAs(m->key(), a);
    v1::ExchangeRequest ask;
    *ask.mutable_from() = m->Hello();
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(5));
    auto reader = to_a->Exchange(&ctx, ask);
    v1::ExchangeResponse msg;
    while (reader->Read(&msg)) {
      if (!msg.has_batch() ||
          msg.batch().origin().device_id() != IdBytes(a->id))
        continue;
      victim = msg.batch().origin();
      std::vector<availability::Entry> entries;
      ASSERT_TRUE(availability::DecodeEntries(msg.batch(),
                                              msg.batch().up_to_seq(),
                                              m->key().device_id(), &entries)
                      .ok());
      if (!entries.empty()) held = entries[0];
    }
    ASSERT_TRUE(reader->Finish().ok());
  }
  ASSERT_EQ(victim.head().signature().size(), 64u) << "A sent no signed head";
  ASSERT_TRUE(held.has_value());

  // M serves its lies and tells B where it is, claiming to know more of A,
  // so that B pulls from it.
  PeerTrust trust;
  trust.Set({a->cert, b->cert});
  v1::Hello m_hello = m->Hello();
  // Declared before the host, so that the host (destroyed first) has shut
  // down before the relay goes: B may be pulling from M as the test ends.
  ForgingRelay relay(m_hello, victim, *held);
  ServerHost host(PeerListener{"127.0.0.1:0", &m->key(), &trust, {}});
  host.AddService(&relay);
  ASSERT_TRUE(host.Start().ok());
  m_hello.set_peer_address(absl::StrCat("127.0.0.1:", host.port()));
  v1::ExchangeRequest tell;
  *tell.mutable_from() = m_hello;
  v1::OriginDigest* claim = tell.add_digest();
  claim->set_device_id(IdBytes(a->id));
  claim->set_generation(victim.generation());
  claim->set_max_seq(victim.head().max_seq() + 1000);
  auto to_b = PeerStubAs(m->key(), b);
  ASSERT_TRUE(CallExchange(to_b.get(), tell).status.ok());
  ASSERT_TRUE(WaitFor([&] { return relay.answers >= 1; }, absl::Seconds(10)))
      << "B never pulled from M";

  // B still lists A for all three sidecars, and takes A's next one.
  EXPECT_TRUE(b_lists_all());
  v1::SidecarKey next = Publish(a, RandomBytes(1000, 9));
  EXPECT_TRUE(WaitFor([&] { return HeldBy(b, next, a->id); }, absl::Seconds(5)))
      << "B takes A's next change for old";
  EXPECT_TRUE(b_lists_all());
  // Having learned, B pulled from every peer again, M too. It said why it
  // refused M's lies once, however often M answered.
  EXPECT_TRUE(WaitFor([&] { return relay.answers >= 2; }, absl::Seconds(10)));
  const std::string log = ReadAll(b->avail->log_path());
  size_t said = 0;
  for (size_t at = log.find("did not sign"); at != std::string::npos;
       at = log.find("did not sign", at + 1)) {
    ++said;
  }
  EXPECT_EQ(said, 1u) << log;
  std::cerr << "M answered B " << relay.answers << " times\n";
}

// ---------------------------------------------------------------------------
// 8. A damaged identity stops the start, clearly, and changes nothing.

TEST_F(PeerAuthTest, KeyFileReadableByOthersStopsTheStart) {
  Device* a = Add("a");
  ASSERT_NO_FATAL_FAILURE(Initialize(a));
  const std::string key = a->avail->state_dir() + "/" + kDeviceKeyFile;
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  ASSERT_NO_FATAL_FAILURE(
      ExpectStartRefused(a, {key, "chmod 600"}, "key-0644"));
  struct stat st;
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0644u) << "the mode was changed for the user";
}

TEST_F(PeerAuthTest, GarbageKeyFileStopsTheStart) {
  Device* a = Add("a");
  ASSERT_NO_FATAL_FAILURE(Initialize(a));
  const std::string key = a->avail->state_dir() + "/" + kDeviceKeyFile;
  {
    std::ofstream out(key, std::ios::binary | std::ios::trunc);
    out << RandomBytes(119, 9);
  }
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectStartRefused(
      a, {key, "not a PEM private key", "Restore the file from a backup"},
      "key-garbage"));
}

TEST_F(PeerAuthTest, MissingKeyWithItsCertificateStopsTheStart) {
  Device* a = Add("a");
  ASSERT_NO_FATAL_FAILURE(Initialize(a));
  const std::string key = a->avail->state_dir() + "/" + kDeviceKeyFile;
  ASSERT_EQ(::unlink(key.c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectStartRefused(
      a, {key, "missing", "Restore the file from a backup"}, "key-missing"));
  EXPECT_FALSE(std::filesystem::exists(key));
}

TEST_F(PeerAuthTest, LostIdentityOfAPairedDatabaseStopsTheStart) {
  Device* a = Add("a");
  ASSERT_NO_FATAL_FAILURE(Start(a));
  auto member = NewPeer("member");
  ASSERT_TRUE(member != nullptr);
  ASSERT_TRUE(member->JoinLibraryOf(a->avail.get()).ok());
  ASSERT_EQ(Members(a).members_size(), 2);
  a->avail->Kill();
  const std::string state = a->avail->state_dir();
  ASSERT_EQ(::unlink((state + "/" + kDeviceKeyFile).c_str()), 0);
  ASSERT_EQ(::unlink((state + "/" + kDeviceCertFile).c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(ExpectStartRefused(
      a, {a->id, state, kDeviceKeyFile, "backup", "fresh database"},
      "identity-lost"));
  EXPECT_FALSE(std::filesystem::exists(state + "/" + kDeviceKeyFile));
  EXPECT_FALSE(std::filesystem::exists(state + "/" + kDeviceCertFile));
}

TEST_F(PeerAuthTest, TransferServiceWithoutADeviceKeyStopsTheStart) {
  Device* a = Add("a", /*transfer=*/true);
  ASSERT_NE(a, nullptr);
  const std::string state = dir_ + "/xfer-only-state";
  std::filesystem::create_directories(state);
  auto argv = [&](const std::string& port_file) {
    return std::vector<std::string>{
        TRANSFER_BIN,
        "--listen=127.0.0.1:0",
        absl::StrCat("--db=", a->xfer->conninfo()),
        absl::StrCat("--sidecar_root=", a->avail->sidecar_root()),
        absl::StrCat("--state_dir=", state),
        absl::StrCat("--port_file=", port_file),
        "--rpc_timeout=1s"};
  };
  std::string port_file = dir_ + "/xfer-nokey.port";
  Run r = RunToExit(argv(port_file), {}, "xfer-nokey", port_file);
  std::cerr << "transfer without a key: exit " << r.status << " after "
            << r.took << "\n";
  EXPECT_NE(r.status, 0) << r.log;
  EXPECT_LT(r.took, absl::Seconds(5));
  EXPECT_FALSE(r.port_file_written) << r.log;
  EXPECT_TRUE(absl::StrContains(r.log, "no device key in " + state)) << r.log;
  EXPECT_TRUE(absl::StrContains(r.log, "availability service")) << r.log;
  EXPECT_TRUE(SnapshotDir(state).empty()) << DescribeDir(SnapshotDir(state));

  // A garbage key: the same, naming the file.
  const std::string key = state + "/" + kDeviceKeyFile;
  {
    std::ofstream out(key, std::ios::binary | std::ios::trunc);
    out << "not a key\n";
  }
  ASSERT_EQ(::chmod(key.c_str(), 0600), 0);
  auto before = SnapshotDir(state);
  Run g = RunToExit(argv(port_file), {}, "xfer-garbage", port_file);
  EXPECT_NE(g.status, 0) << g.log;
  EXPECT_FALSE(g.port_file_written) << g.log;
  EXPECT_TRUE(absl::StrContains(g.log, "cannot use the device key")) << g.log;
  EXPECT_TRUE(absl::StrContains(g.log, state)) << g.log;
  EXPECT_TRUE(SnapshotDir(state) == before) << DescribeDir(SnapshotDir(state));
}

}  // namespace
}  // namespace sidecar::testing
