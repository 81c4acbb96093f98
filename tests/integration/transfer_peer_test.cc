// The TransferPeer service (PeerServer) in-process on loopback, backed by a
// real availability service (a child process on a private PostgreSQL), with
// real files under that device's sidecar root.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/thread_pool.h"
#include "common/transport.h"
#include "services/transfer/local_index.h"
#include "services/transfer/peer_server.h"
#include "sidecar/v1/transfer.grpc.pb.h"
#include "tests/support/availability_process.h"
#include "tests/support/peer_tls.h"
#include "tests/support/pg_server.h"
#include "tests/support/test_data.h"

namespace sidecar::testing {
namespace {

using transfer::LocalIndex;
using transfer::PeerServer;

std::string TempDir() {
  std::string t = "/tmp/sidecar-transfer-peer-XXXXXX";
  char* d = mkdtemp(t.data());
  return d ? std::string(d) : "/tmp";
}

struct ReadResult {
  grpc::Status status;
  std::vector<v1::ReadChunk> chunks;
  std::string data;  // the chunks' data, concatenated
};

struct BatchResult {
  grpc::Status status;
  std::vector<v1::BatchReadResponse> messages;
  std::map<uint32_t, v1::BatchReadItem> items;  // by index
};

// Reads a whole BatchRead; an index that comes twice fails the test.
BatchResult BatchReadAll(v1::TransferPeer::Stub* stub,
                         const v1::BatchReadRequest& req,
                         absl::Duration timeout = absl::Seconds(30)) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, timeout);
  auto reader = stub->BatchRead(&ctx, req);
  BatchResult r;
  v1::BatchReadResponse msg;
  while (reader->Read(&msg)) {
    EXPECT_GT(msg.items_size(), 0) << "message " << r.messages.size();
    for (const v1::BatchReadItem& item : msg.items()) {
      EXPECT_TRUE(r.items.emplace(item.index(), item).second)
          << "index " << item.index() << " twice";
    }
    r.messages.push_back(std::move(msg));
    msg.Clear();
  }
  r.status = reader->Finish();
  return r;
}

class TransferPeerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new std::string(TempDir());
    pg_ = new PgServer();
    absl::Status s = pg_->Start();
    ASSERT_TRUE(s.ok()) << s;
    auto p = AvailabilityProcess::Create(AVAILABILITY_BIN, pg_, *dir_,
                                         {"transfer_peer", {}, {}});
    ASSERT_TRUE(p.ok()) << p.status();
    avail_ = p->release();
    s = avail_->Start();
    ASSERT_TRUE(s.ok()) << s << " (log: " << avail_->log_path() << ")";

    index_ = new LocalIndex(avail_->local_address());
    pool_ = new ThreadPool({.threads = 4});
    server_ = new PeerServer(index_, avail_->sidecar_root(), pool_, {});
    auto tls = PeerTls::Make(*dir_ + "/keys");
    ASSERT_TRUE(tls.ok()) << tls.status();
    tls_ = tls->release();
    host_ = new ServerHost(tls_->Listener());
    host_->AddService(server_);
    s = host_->Start();
    ASSERT_TRUE(s.ok()) << s;
    stub_ = v1::TransferPeer::NewStub(tls_->Channel(host_->port())).release();
  }

  static void TearDownTestSuite() {
    delete stub_;
    if (host_) host_->Shutdown(absl::Seconds(1));
    delete host_;
    delete pool_;  // after the server: runs what is left of reactor tasks
    delete server_;
    delete index_;
    delete avail_;
    delete pg_;
    std::error_code ec;
    if (!::testing::UnitTest::GetInstance()->Failed()) {
      std::filesystem::remove_all(*dir_, ec);
    } else {
      std::cerr << "logs kept in " << *dir_ << "\n";
    }
    delete dir_;
  }

  static std::string PathOf(const v1::SidecarKey& k) {
    auto key = KeyFromProto(k);
    EXPECT_TRUE(key.ok()) << key.status();
    return absl::StrCat(avail_->sidecar_root(), "/", RelativePath(*key));
  }

  static void WriteFile(const v1::SidecarKey& k, const std::string& bytes) {
    std::filesystem::path path = PathOf(k);
    std::filesystem::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  }

  // Writes each file and registers them all in one call.
  static void Publish(
      const std::vector<std::pair<v1::SidecarKey, std::string>>& files,
      v1::SidecarStatus status = v1::SIDECAR_STATUS_READY) {
    v1::RegisterRequest req;
    for (const auto& [k, bytes] : files) {
      WriteFile(k, bytes);
      v1::LocalSidecar* l = req.add_sidecars();
      *l->mutable_key() = k;
      l->set_size(bytes.size());
      l->set_sha256(std::string(DigestBytes(Sha256Of(bytes))));
      l->set_status(status);
      l->set_generator_version("test-1");
    }
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    v1::RegisterResponse resp;
    grpc::Status st = avail_->api()->Register(&ctx, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
    ASSERT_EQ(resp.registered(), files.size());
  }

  static v1::SidecarKey PublishOne(const std::string& bytes) {
    v1::SidecarKey k = RandomKeyProto();
    Publish({{k, bytes}});
    return k;
  }

  static ReadResult Read(const v1::SidecarKey& key, uint64_t offset = 0,
                         uint64_t length = 0, uint32_t chunk_bytes = 0) {
    v1::ReadRequest req;
    *req.mutable_key() = key;
    req.set_offset(offset);
    req.set_length(length);
    req.set_chunk_bytes(chunk_bytes);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(30));
    auto reader = stub_->Read(&ctx, req);
    ReadResult r;
    v1::ReadChunk chunk;
    while (reader->Read(&chunk)) {
      r.data += chunk.data();
      r.chunks.push_back(std::move(chunk));
    }
    r.status = reader->Finish();
    return r;
  }

  // Checks offsets, per-chunk checksums and the first message's fields.
  static void ExpectWellFormed(const ReadResult& r, uint64_t offset,
                               const std::string& whole) {
    ASSERT_FALSE(r.chunks.empty());
    EXPECT_EQ(r.chunks[0].file_size(), whole.size());
    EXPECT_EQ(r.chunks[0].file_sha256(), DigestBytes(Sha256Of(whole)));
    uint64_t at = offset;
    for (size_t i = 0; i < r.chunks.size(); ++i) {
      const v1::ReadChunk& c = r.chunks[i];
      EXPECT_EQ(c.offset(), at) << "chunk " << i;
      EXPECT_EQ(c.chunk_crc32c(), Crc32c(c.data())) << "chunk " << i;
      if (i > 0) {
        EXPECT_EQ(c.file_size(), 0u) << "chunk " << i;
      }
      at += c.data().size();
    }
  }

  static inline std::string* dir_ = nullptr;
  static inline PgServer* pg_ = nullptr;
  static inline AvailabilityProcess* avail_ = nullptr;
  static inline LocalIndex* index_ = nullptr;
  static inline ThreadPool* pool_ = nullptr;
  static inline PeerServer* server_ = nullptr;
  static inline PeerTls* tls_ = nullptr;
  static inline ServerHost* host_ = nullptr;
  static inline v1::TransferPeer::Stub* stub_ = nullptr;
};

TEST_F(TransferPeerTest, FullReadReassemblesTheFile) {
  const std::string bytes = RandomBytes((1 << 20) + 12345, 1);
  v1::SidecarKey k = PublishOne(bytes);
  for (uint32_t chunk : {0u, 1u, 64u << 10, 100000u, 4u << 20}) {
    SCOPED_TRACE(absl::StrCat("chunk_bytes ", chunk));
    ReadResult r = Read(k, 0, 0, chunk);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    ExpectWellFormed(r, 0, bytes);
    EXPECT_TRUE(r.data == bytes);
    uint32_t effective =
        transfer::EffectiveChunkBytes(chunk, transfer::kDefaultChunkBytes);
    EXPECT_EQ(r.chunks.size(), (bytes.size() + effective - 1) / effective);
    EXPECT_EQ(r.chunks[0].data().size(), effective);
  }
}

TEST_F(TransferPeerTest, ReadFromOffsetWithLength) {
  const std::string bytes = RandomBytes(700000, 2);
  v1::SidecarKey k = PublishOne(bytes);

  ReadResult r = Read(k, 100000, 300000, 64 << 10);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ExpectWellFormed(r, 100000, bytes);
  EXPECT_TRUE(r.data == bytes.substr(100000, 300000));

  r = Read(k, 654321);  // to the end
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ExpectWellFormed(r, 654321, bytes);
  EXPECT_TRUE(r.data == bytes.substr(654321));

  r = Read(k, bytes.size(), bytes.size() - bytes.size());  // at the end
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.chunks.size(), 1u);
  EXPECT_EQ(r.chunks[0].offset(), bytes.size());
  EXPECT_TRUE(r.chunks[0].data().empty());
  EXPECT_EQ(r.chunks[0].file_size(), bytes.size());
  EXPECT_EQ(r.chunks[0].file_sha256(), DigestBytes(Sha256Of(bytes)));
}

TEST_F(TransferPeerTest, EmptyFile) {
  v1::SidecarKey k = PublishOne("");
  ReadResult r = Read(k);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  ASSERT_EQ(r.chunks.size(), 1u);
  EXPECT_EQ(r.chunks[0].file_size(), 0u);
  EXPECT_TRUE(r.data.empty());
}

TEST_F(TransferPeerTest, PastTheEndIsOutOfRange) {
  const std::string bytes = RandomBytes(5000, 3);
  v1::SidecarKey k = PublishOne(bytes);
  ReadResult r = Read(k, 5001);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::OUT_OF_RANGE);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "5001"))
      << r.status.error_message();
  EXPECT_TRUE(absl::StrContains(r.status.error_message(), "5000"))
      << r.status.error_message();
  EXPECT_TRUE(r.chunks.empty());

  r = Read(k, 4000, 1001);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::OUT_OF_RANGE)
      << r.status.error_message();
  EXPECT_TRUE(r.chunks.empty());
  r = Read(k, 4000, 1000);
  EXPECT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.data == bytes.substr(4000));
}

TEST_F(TransferPeerTest, UnknownKeyIsNotFound) {
  ReadResult r = Read(RandomKeyProto());
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "is not ready on this device"))
      << r.status.error_message();
}

TEST_F(TransferPeerTest, TraversalIsInvalidArgument) {
  for (const char* variant : {"../x", "..", "a/../../etc", "x\\y", ".hidden"}) {
    SCOPED_TRACE(variant);
    ReadResult r = Read(RandomKeyProto(v1::SIDECAR_KIND_THUMB, variant));
    EXPECT_EQ(r.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(r.status.error_message(), "variant"))
        << r.status.error_message();
  }
  v1::SidecarKey k = RandomKeyProto();
  k.set_content_uuid("../../etc");
  EXPECT_EQ(Read(k).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  k = RandomKeyProto();
  k.set_kind(static_cast<v1::SidecarKind>(99));
  EXPECT_EQ(Read(k).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(TransferPeerTest, PendingIsNotFound) {
  v1::SidecarKey k = RandomKeyProto();
  Publish({{k, RandomBytes(1000, 4)}}, v1::SIDECAR_STATUS_PENDING);
  ReadResult r = Read(k);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::NOT_FOUND)
      << r.status.error_message();
}

TEST_F(TransferPeerTest, RemovedStopsBeingServed) {
  v1::SidecarKey k = PublishOne(RandomBytes(1000, 5));
  ASSERT_TRUE(Read(k).status.ok());
  v1::RemoveRequest req;
  *req.add_keys() = k;
  v1::RemoveResponse resp;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(5));
  ASSERT_TRUE(avail_->api()->Remove(&ctx, req, &resp).ok());
  EXPECT_EQ(Read(k).status.error_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(TransferPeerTest, DamagedLocalCopyIsDataLoss) {
  const std::string bytes = RandomBytes(300000, 6);
  // Truncated after registration.
  v1::SidecarKey truncated = PublishOne(bytes);
  WriteFile(truncated, bytes.substr(0, 1000));
  ReadResult r = Read(truncated);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "is damaged (size 1000, registered 300000)"))
      << r.status.error_message();

  // Same size, one byte changed: caught by the whole-file hash, before the
  // last chunk goes out.
  v1::SidecarKey flipped = PublishOne(bytes);
  std::string bad = bytes;
  bad[200000] ^= 0x5a;
  WriteFile(flipped, bad);
  r = Read(flipped, 0, 0, 64 << 10);
  EXPECT_EQ(r.status.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(absl::StrContains(r.status.error_message(),
                                "does not match its registered checksum"))
      << r.status.error_message();
  EXPECT_LT(r.data.size(), bytes.size());

  // Missing.
  v1::SidecarKey missing = PublishOne(bytes);
  std::filesystem::remove(PathOf(missing));
  EXPECT_EQ(Read(missing).status.error_code(), grpc::StatusCode::DATA_LOSS);

  // A symlink in its place is not followed.
  v1::SidecarKey linked = PublishOne(bytes);
  std::filesystem::path p = PathOf(linked);
  std::filesystem::remove(p);
  std::filesystem::create_symlink(PathOf(truncated), p);
  EXPECT_EQ(Read(linked).status.error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
}

TEST_F(TransferPeerTest, BatchRead) {
  std::vector<std::pair<v1::SidecarKey, std::string>> files;
  for (int i = 0; i < 200; ++i) {
    files.emplace_back(RandomKeyProto(), RandomBytes(100 + 997 * i, 1000 + i));
  }
  Publish(files);
  v1::BatchReadRequest req;
  for (const auto& f : files) *req.add_keys() = f.first;
  *req.add_keys() = RandomKeyProto();
  // A bad key and one too large for BatchRead.
  v1::SidecarKey big =
      PublishOne(RandomBytes(server_->max_batch_item_bytes() + 1, 7));
  *req.add_keys() = RandomKeyProto(v1::SIDECAR_KIND_THUMB, "../x");
  *req.add_keys() = big;
  *req.add_keys() = RandomKeyProto();

  BatchResult r = BatchReadAll(stub_, req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::map<uint32_t, v1::BatchReadItem>& items = r.items;
  ASSERT_EQ(items.size(), 204u);
  for (uint32_t i = 0; i < 200; ++i) {
    const v1::BatchReadItem& it = items[i];
    ASSERT_EQ(it.status_code(), 0) << i << ": " << it.status_message();
    EXPECT_TRUE(it.data() == files[i].second) << i;
    EXPECT_EQ(it.sha256(), DigestBytes(Sha256Of(files[i].second))) << i;
  }
  EXPECT_EQ(items[200].status_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(items[201].status_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(items[202].status_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(items[202].status_message(), "use Read"))
      << items[202].status_message();
  EXPECT_TRUE(items[202].data().empty());
  EXPECT_EQ(items[203].status_code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(TransferPeerTest, BatchReadDamagedItem) {
  const std::string bytes = RandomBytes(5000, 8);
  v1::SidecarKey good = PublishOne(bytes);
  v1::SidecarKey bad = PublishOne(bytes);
  std::string flipped = bytes;
  flipped[10] ^= 1;
  WriteFile(bad, flipped);
  v1::BatchReadRequest req;
  *req.add_keys() = good;
  *req.add_keys() = bad;
  BatchResult r = BatchReadAll(stub_, req, absl::Seconds(10));
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  std::map<uint32_t, v1::BatchReadItem>& items = r.items;
  ASSERT_EQ(items.size(), 2u);
  EXPECT_EQ(items[0].status_code(), 0);
  EXPECT_TRUE(items[0].data() == bytes);
  EXPECT_EQ(items[1].status_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(items[1].data().empty());
}

// Small items come packed, many to a message.
TEST_F(TransferPeerTest, BatchReadPacksItems) {
  std::vector<std::pair<v1::SidecarKey, std::string>> files;
  for (int i = 0; i < 300; ++i) {
    files.emplace_back(RandomKeyProto(), RandomBytes(10000, 3000 + i));
  }
  Publish(files);
  v1::BatchReadRequest req;
  for (const auto& f : files) *req.add_keys() = f.first;
  BatchResult r = BatchReadAll(stub_, req);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  RecordProperty("messages", static_cast<int>(r.messages.size()));
  EXPECT_LT(r.messages.size(), 50u);
  const transfer::PeerServerOptions defaults;
  for (size_t m = 0; m < r.messages.size(); ++m) {
    EXPECT_LE(r.messages[m].ByteSizeLong(), defaults.max_batch_message_bytes)
        << "message " << m;
    EXPECT_LE(r.messages[m].ByteSizeLong(), defaults.batch_message_target_bytes)
        << "message " << m;
  }
  ASSERT_EQ(r.items.size(), files.size());
  for (uint32_t i = 0; i < files.size(); ++i) {
    const v1::BatchReadItem& it = r.items[i];
    ASSERT_EQ(it.status_code(), 0) << i << ": " << it.status_message();
    EXPECT_TRUE(it.data() == files[i].second) << i;
    EXPECT_EQ(it.sha256(), DigestBytes(Sha256Of(files[i].second))) << i;
  }
}

// Items near the message bounds, on servers with small ones: items of a bit
// more than half the target (or of the bound, when the target is larger)
// go one to a message, the largest an item may be goes alone, and small
// ones and errors fill in; no message passes max_batch_message_bytes.
TEST_F(TransferPeerTest, BatchReadItemsNearTheMessageBound) {
  struct Config {
    size_t max_message;
    size_t target;
  };
  for (const Config& c :
       {Config{1 << 20, 256 << 10}, Config{512 << 10, 1 << 20}}) {
    SCOPED_TRACE(absl::StrCat("max ", c.max_message, ", target ", c.target));
    ThreadPool pool({.threads = 2});
    PeerServer server(index_, avail_->sidecar_root(), &pool,
                      {.max_batch_message_bytes = c.max_message,
                       .batch_message_target_bytes = c.target});
    ServerHost host(tls_->Listener());
    host.AddService(&server);
    ASSERT_TRUE(host.Start().ok());
    auto stub = v1::TransferPeer::NewStub(tls_->Channel(host.port()));

    const size_t bound = std::min(c.max_message, c.target);
    const size_t half = bound / 2 + 1000;
    std::vector<std::pair<v1::SidecarKey, std::string>> files;
    std::vector<bool> is_half;
    std::vector<bool> is_max;
    for (int i = 0; i < 30; ++i) {
      size_t size = 2000;
      if (i % 3 == 0) size = half;
      if (i == 10 || i == 20) size = server.max_batch_item_bytes();
      files.emplace_back(RandomKeyProto(), RandomBytes(size, 4000 + i));
      is_half.push_back(size == half);
      is_max.push_back(size == server.max_batch_item_bytes());
    }
    Publish(files);
    v1::BatchReadRequest req;
    for (const auto& f : files) *req.add_keys() = f.first;
    *req.add_keys() = RandomKeyProto();  // not found
    *req.add_keys() = PublishOne(
        RandomBytes(server.max_batch_item_bytes() + 1, 4100));  // too large

    BatchResult r = BatchReadAll(stub.get(), req);
    ASSERT_TRUE(r.status.ok()) << r.status.error_message();
    for (size_t m = 0; m < r.messages.size(); ++m) {
      const v1::BatchReadResponse& msg = r.messages[m];
      SCOPED_TRACE(absl::StrCat("message ", m, " of ", msg.items_size(),
                                " items, ", msg.ByteSizeLong(), " bytes"));
      EXPECT_LE(msg.ByteSizeLong(), c.max_message);
      if (msg.items_size() > 1) {
        EXPECT_LE(msg.ByteSizeLong(), bound);
      }
      int large = 0;  // halves and largest: no two fit together
      for (const v1::BatchReadItem& it : msg.items()) {
        if (it.index() >= files.size()) continue;
        if (is_half[it.index()] || is_max[it.index()]) ++large;
      }
      EXPECT_LE(large, 1);
    }
    ASSERT_EQ(r.items.size(), files.size() + 2);
    for (uint32_t i = 0; i < files.size(); ++i) {
      const v1::BatchReadItem& it = r.items[i];
      ASSERT_EQ(it.status_code(), 0) << i << ": " << it.status_message();
      EXPECT_TRUE(it.data() == files[i].second) << i;
      EXPECT_EQ(it.sha256(), DigestBytes(Sha256Of(files[i].second))) << i;
    }
    EXPECT_EQ(r.items[files.size()].status_code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_EQ(r.items[files.size() + 1].status_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_GE(r.messages.size(), 10u + 2u);  // the halves and the largest
    RecordProperty(absl::StrCat("messages_max_", c.max_message),
                   static_cast<int>(r.messages.size()));
    host.Shutdown(absl::Seconds(1));
  }
}

TEST_F(TransferPeerTest, BatchReadTooManyKeys) {
  v1::BatchReadRequest req;
  v1::SidecarKey k = RandomKeyProto();
  for (int i = 0; i < 10001; ++i) *req.add_keys() = k;
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  auto reader = stub_->BatchRead(&ctx, req);
  v1::BatchReadResponse msg;
  EXPECT_FALSE(reader->Read(&msg));
  EXPECT_EQ(reader->Finish().error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
}

TEST_F(TransferPeerTest, ConcurrentReadUnaffectedByFailingOne) {
  const std::string big = RandomBytes(24 << 20, 9);
  v1::SidecarKey good = PublishOne(big);
  const std::string small = RandomBytes(500000, 10);
  v1::SidecarKey bad = PublishOne(small);
  std::string flipped = small;
  flipped[499999] ^= 1;
  WriteFile(bad, flipped);

  std::atomic<bool> stop{false};
  std::atomic<int> failures{0};
  std::thread failing([&] {
    while (!stop.load()) {
      if (Read(bad, 0, 0, 64 << 10).status.error_code() ==
          grpc::StatusCode::DATA_LOSS) {
        failures.fetch_add(1);
      }
      Read(RandomKeyProto());
    }
  });
  ReadResult r = Read(good, 0, 0, 64 << 10);
  stop = true;
  failing.join();
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.data == big);
  ExpectWellFormed(r, 0, big);
  EXPECT_GT(failures.load(), 0);
}

TEST_F(TransferPeerTest, CancelMidStreamLeavesServerWorking) {
  const std::string big = RandomBytes(16 << 20, 11);
  v1::SidecarKey k = PublishOne(big);
  for (int i = 0; i < 20; ++i) {
    v1::ReadRequest req;
    *req.mutable_key() = k;
    req.set_chunk_bytes(64 << 10);
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(30));
    auto reader = stub_->Read(&ctx, req);
    v1::ReadChunk chunk;
    for (int j = 0; j < 1 + i % 4; ++j) ASSERT_TRUE(reader->Read(&chunk));
    ctx.TryCancel();
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  // Cancelled BatchReads too, at various points.
  std::vector<std::pair<v1::SidecarKey, std::string>> files;
  for (int i = 0; i < 50; ++i) {
    files.emplace_back(RandomKeyProto(), RandomBytes(200000, 2000 + i));
  }
  Publish(files);
  for (int i = 0; i < 10; ++i) {
    v1::BatchReadRequest req;
    for (const auto& f : files) *req.add_keys() = f.first;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(30));
    auto reader = stub_->BatchRead(&ctx, req);
    v1::BatchReadResponse msg;
    for (int j = 0; j < i; ++j) reader->Read(&msg);
    ctx.TryCancel();
    while (reader->Read(&msg)) {
    }
    reader->Finish();
  }
  ReadResult r = Read(k);
  ASSERT_TRUE(r.status.ok()) << r.status.error_message();
  EXPECT_TRUE(r.data == big);
}

TEST_F(TransferPeerTest, AvailabilityDownIsUnavailable) {
  // A LocalIndex pointed at nothing, alone and behind a second server.
  LocalIndex nowhere("127.0.0.1:1", {.rpc_timeout = absl::Milliseconds(500)});
  auto found = nowhere.LookupOne(*KeyFromProto(RandomKeyProto()));
  ASSERT_EQ(found.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(found.status().message(), "127.0.0.1:1"))
      << found.status();

  ThreadPool pool({.threads = 1});
  PeerServer server(&nowhere, avail_->sidecar_root(), &pool, {});
  ServerHost host(tls_->Listener());
  host.AddService(&server);
  ASSERT_TRUE(host.Start().ok());
  auto stub = v1::TransferPeer::NewStub(tls_->Channel(host.port()));
  v1::ReadRequest req;
  *req.mutable_key() = RandomKeyProto();
  grpc::ClientContext ctx;
  SetDeadline(&ctx, absl::Seconds(10));
  auto reader = stub->Read(&ctx, req);
  v1::ReadChunk chunk;
  EXPECT_FALSE(reader->Read(&chunk));
  grpc::Status st = reader->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_TRUE(absl::StrContains(st.error_message(), "availability"))
      << st.error_message();
  host.Shutdown(absl::Seconds(1));
}

}  // namespace
}  // namespace sidecar::testing
