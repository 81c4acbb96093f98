// Throughput of TransferPeer.Read by chunk size: serves one large file with
// PeerServer in-process and reads it over loopback gRPC with chunk sizes of
// 64 KiB .. 1 MiB, beside two baselines measured in the same run on the
// same (page-cached) file without gRPC:
//   - read + SHA-256 once (what a plain copy-and-verify costs);
//   - read + per-chunk SHA-256 + whole-file SHA-256 (the server's own work
//     per byte, at the default chunk size).
// The client only receives (it does not verify), so the figure is what the
// server and the transport sustain; on a real link the receiver verifies on
// its own CPU.
//
//   chunk_size_bench --size_mib=256 --runs=3
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/thread_pool.h"
#include "common/transport.h"
#include "tests/support/peer_tls.h"
#include "services/transfer/local_index.h"
#include "services/transfer/peer_server.h"
#include "sidecar/v1/transfer.grpc.pb.h"

ABSL_FLAG(int, size_mib, 256, "size of the served file in MiB");
ABSL_FLAG(int, runs, 3, "runs per measurement (the best is reported)");
ABSL_FLAG(int, threads, 4, "ThreadPool threads of the server");
ABSL_FLAG(std::string, dir, "", "work directory (default: a new one in /tmp)");

namespace sidecar::bench {
namespace {

using transfer::LocalIndex;
using transfer::LocalSidecarInfo;
using transfer::PeerServer;

// Answers every lookup with one record, without an availability service.
class FixedIndex : public LocalIndex {
 public:
  FixedIndex(SidecarKey key, LocalSidecarInfo info)
      : LocalIndex("127.0.0.1:1"), key_(std::move(key)), info_(info) {}
  absl::StatusOr<std::vector<std::optional<LocalSidecarInfo>>> Lookup(
      absl::Span<const SidecarKey> keys) override {
    std::vector<std::optional<LocalSidecarInfo>> out;
    for (const SidecarKey& k : keys) {
      if (k == key_) {
        out.push_back(info_);
      } else {
        out.push_back(std::nullopt);
      }
    }
    return out;
  }

 private:
  SidecarKey key_;
  LocalSidecarInfo info_;
};

double MBps(uint64_t bytes, absl::Duration d) {
  return static_cast<double>(bytes) / 1e6 / absl::ToDoubleSeconds(d);
}

// Reads the file in `chunk` pieces; hashes each piece if `per_chunk`, and
// the whole file.
absl::Duration LocalRead(const std::string& path, size_t chunk,
                         bool per_chunk) {
  absl::Time start = absl::Now();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::string buf(chunk, '\0');
  Sha256 whole;
  Sha256 piece;
  uint64_t off = 0;
  for (;;) {
    ssize_t n = pread(fd, buf.data(), chunk, off);
    if (n <= 0) break;
    absl::string_view data(buf.data(), n);
    if (per_chunk) {
      piece.Update(data);
      piece.Finish();
    }
    whole.Update(data);
    off += n;
  }
  whole.Finish();
  close(fd);
  return absl::Now() - start;
}

int Main() {
  const uint64_t size = static_cast<uint64_t>(absl::GetFlag(FLAGS_size_mib))
                        << 20;
  const int runs = std::max(1, absl::GetFlag(FLAGS_runs));
  std::string dir = absl::GetFlag(FLAGS_dir);
  bool own_dir = dir.empty();
  if (own_dir) {
    std::string t = "/tmp/chunk-bench-XXXXXX";
    dir = mkdtemp(t.data());
  }

  SidecarKey key;
  key.content = Uuid::Random();
  key.kind = v1::SIDECAR_KIND_PROXY;
  key.variant = "proxy_edit";
  key.format = v1::SIDECAR_FORMAT_MP4;
  const std::string path = absl::StrCat(dir, "/", RelativePath(key));
  std::filesystem::create_directories(
      std::filesystem::path(path).parent_path());
  {
    std::mt19937_64 rng(42);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    std::string block(1 << 20, '\0');
    for (uint64_t done = 0; done < size; done += block.size()) {
      for (size_t i = 0; i < block.size(); i += 8) {
        uint64_t v = rng();
        memcpy(block.data() + i, &v, 8);
      }
      out.write(block.data(), std::min<uint64_t>(block.size(), size - done));
    }
  }
  absl::StatusOr<Sha256Digest> sha = Sha256OfFile(path);  // also warms cache
  if (!sha.ok()) {
    std::fprintf(stderr, "%s\n", std::string(sha.status().message()).c_str());
    return 1;
  }

  FixedIndex index(key, LocalSidecarInfo{size, *sha, RelativePath(key)});
  ThreadPool pool({.threads = absl::GetFlag(FLAGS_threads)});
  PeerServer server(&index, dir, &pool, {});
  // Over the product's mutual TLS, as between two devices.
  absl::StatusOr<std::unique_ptr<testing::PeerTls>> tls =
      testing::PeerTls::Make(dir + "/keys");
  if (!tls.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tls.status().message()).c_str());
    return 1;
  }
  ServerHost host((*tls)->Listener());
  host.AddService(&server);
  if (absl::Status s = host.Start(); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  auto stub = v1::TransferPeer::NewStub((*tls)->Channel(host.port()));
  // The same service over plaintext on loopback, side by side: the cost of
  // TLS on the data path. (The product has no plaintext peer listener.)
  ServerHost plain_host(LocalListener{"127.0.0.1:0"});
  plain_host.AddService(&server);
  if (absl::Status s = plain_host.Start(); !s.ok()) {
    std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
    return 1;
  }
  auto plain_stub = v1::TransferPeer::NewStub(
      MakeLocalChannel(absl::StrCat("127.0.0.1:", plain_host.port())));

  std::printf(
      "file: %llu MiB, page-cached; best of %d runs; %d pool "
      "threads; %u CPUs\n",
      static_cast<unsigned long long>(size >> 20), runs,
      absl::GetFlag(FLAGS_threads), std::thread::hardware_concurrency());
  std::printf("%-44s %10s\n", "measurement", "MB/s");

  auto best_local = [&](size_t chunk, bool per_chunk) {
    absl::Duration best = absl::InfiniteDuration();
    for (int r = 0; r < runs; ++r) {
      best = std::min(best, LocalRead(path, chunk, per_chunk));
    }
    return MBps(size, best);
  };
  std::printf("%-44s %10.0f\n", "baseline: read + SHA-256 (no gRPC)",
              best_local(transfer::kDefaultChunkBytes, false));
  std::printf("%-44s %10.0f\n", "baseline: read + chunk & whole SHA-256 (256K)",
              best_local(transfer::kDefaultChunkBytes, true));

  v1::ReadRequest req;
  KeyToProto(key, req.mutable_key());
  // Best time of one whole-file Read through `s`, or nullopt on failure.
  auto best_read = [&](v1::TransferPeer::Stub* s)
      -> std::optional<absl::Duration> {
    absl::Duration best = absl::InfiniteDuration();
    for (int r = 0; r < runs; ++r) {
      grpc::ClientContext ctx;
      SetDeadline(&ctx, absl::Minutes(5));
      absl::Time start = absl::Now();
      auto reader = s->Read(&ctx, req);
      v1::ReadChunk msg;
      uint64_t got = 0;
      while (reader->Read(&msg)) got += msg.data().size();
      grpc::Status st = reader->Finish();
      absl::Duration took = absl::Now() - start;
      if (!st.ok() || got != size) {
        std::fprintf(stderr, "Read failed: %s (%llu bytes)\n",
                     st.error_message().c_str(),
                     static_cast<unsigned long long>(got));
        return std::nullopt;
      }
      best = std::min(best, took);
    }
    return best;
  };
  for (uint32_t chunk :
       {64u << 10, 128u << 10, 256u << 10, 512u << 10, 1u << 20}) {
    req.set_chunk_bytes(chunk);
    std::optional<absl::Duration> tls_best = best_read(stub.get());
    std::optional<absl::Duration> plain_best = best_read(plain_stub.get());
    if (!tls_best || !plain_best) return 1;
    std::printf(
        "%-44s %10.0f   plaintext %6.0f MB/s, TLS/plaintext time %.2f\n",
        absl::StrFormat("gRPC Read (mutual TLS), chunk %4u KiB", chunk >> 10)
            .c_str(),
        MBps(size, *tls_best), MBps(size, *plain_best),
        absl::FDivDuration(*tls_best, *plain_best));
  }
  plain_host.Shutdown(absl::Seconds(1));
  host.Shutdown(absl::Seconds(1));
  if (own_dir) {
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }
  return 0;
}

}  // namespace
}  // namespace sidecar::bench

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return sidecar::bench::Main();
}
