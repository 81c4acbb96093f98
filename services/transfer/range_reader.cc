#include "services/transfer/range_reader.h"

#include <deque>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/crc32c.h"
#include "common/transport.h"

namespace sidecar::transfer {
namespace {

// A stream's progress is synced (fdatasync) whenever at least this many
// bytes are unsynced, and recorded in its job row at most this often.
constexpr uint64_t kCheckpointBytes = 2ull << 20;
constexpr absl::Duration kCheckpointInterval = absl::Milliseconds(250);

// Feeds a Sha256 on its own thread, so that the whole-file hash runs beside
// the per-chunk checks and the writes instead of after them (the machines
// have two cores). At most kMaxQueued chunks wait; Add blocks beyond. Hashed
// buffers are handed back (TakeBuffer) for the next chunks, so that a long
// stream does not allocate, and fault in, fresh memory for every chunk.
class AsyncHasher {
 public:
  explicit AsyncHasher(Sha256* hasher)
      : hasher_(hasher), thread_([this] { Run(); }) {}
  ~AsyncHasher() { Finish(); }

  void Add(std::string data) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &AsyncHasher::HasRoomLocked));
    queue_.push_back(std::move(data));
  }

  // A hashed buffer to read the next chunk into, or an empty string.
  std::string TakeBuffer() {
    absl::MutexLock lock(&mu_);
    if (free_.empty()) return std::string();
    std::string b = std::move(free_.back());
    free_.pop_back();
    return b;
  }

  // Waits until everything added is hashed.
  void Finish() {
    {
      absl::MutexLock lock(&mu_);
      if (done_) return;
      done_ = true;
    }
    thread_.join();
  }

 private:
  static constexpr size_t kMaxQueued = 64;
  static constexpr size_t kMaxFree = 4;

  // Conditions for mu_.Await (which calls them with mu_ held).
  bool HasRoomLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return queue_.size() < kMaxQueued;
  }
  bool HasWorkOrDoneLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return !queue_.empty() || done_;
  }

  void Run() {
    while (true) {
      std::string data;
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(this, &AsyncHasher::HasWorkOrDoneLocked));
        if (queue_.empty()) return;
        data = std::move(queue_.front());
        queue_.pop_front();
      }
      hasher_->Update(data);
      absl::MutexLock lock(&mu_);
      if (free_.size() < kMaxFree) free_.push_back(std::move(data));
    }
  }

  Sha256* const hasher_;
  absl::Mutex mu_;
  std::deque<std::string> queue_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> free_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Makes a stream's progress durable on its own thread: syncs the part file
// and then records the synced length, so that the receive loop never waits
// for the disk. Syncing while bytes still arrive is also write-behind: the
// disk writes beside the network instead of after it, the dirty pages stay
// few, and the commit's final sync finds little left to do.
class AsyncCheckpointer {
 public:
  // `record(n)` is called on the checkpointer's thread with a length whose
  // bytes are synced.
  AsyncCheckpointer(PartFile* part, uint64_t synced,
                    std::function<void(uint64_t)> record)
      : part_(part),
        record_(std::move(record)),
        written_(synced),
        thread_([this, synced] { Run(synced); }) {}
  ~AsyncCheckpointer() { Finish(); }

  // The part file holds every byte before `written`. Never blocks on I/O.
  void Written(uint64_t written) {
    absl::MutexLock lock(&mu_);
    written_ = written;
  }

  // Waits for a sync in progress and stops; what was written since is left
  // to the caller's own final sync.
  void Finish() {
    {
      absl::MutexLock lock(&mu_);
      if (done_) return;
      done_ = true;
    }
    thread_.join();
  }

 private:
  void Run(uint64_t synced) {
    absl::Time recorded_at = absl::Now();
    while (true) {
      uint64_t target;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this, synced] {
          mu_.AssertHeld();
          return done_ || written_ - synced >= kCheckpointBytes;
        };
        mu_.Await(absl::Condition(&ready));
        if (done_) return;
        target = written_;
      }
      if (!part_->Sync().ok()) return;  // the final sync reports it
      synced = target;
      if (absl::Now() - recorded_at >= kCheckpointInterval) {
        record_(synced);
        recorded_at = absl::Now();
      }
    }
  }

  PartFile* const part_;
  const std::function<void(uint64_t)> record_;
  absl::Mutex mu_;
  uint64_t written_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace

RangeReader::RangeReader(RangeTarget target, std::string source_name,
                         uint32_t chunk_bytes, Bandwidth* bandwidth,
                         v1::Priority priority, Callbacks callbacks)
    : target_(std::move(target)),
      source_name_(std::move(source_name)),
      chunk_bytes_(chunk_bytes),
      bandwidth_(bandwidth),
      priority_(priority),
      callbacks_(std::move(callbacks)) {}

absl::Status RangeReader::ReadInOrder(v1::TransferPeer::Stub* stub,
                                      uint64_t offset, uint64_t length,
                                      PartFile* part, Sha256* hasher) {
  return Read(stub, offset, length, part, hasher, nullptr);
}

absl::Status RangeReader::ReadPiece(v1::TransferPeer::Stub* stub,
                                    uint64_t offset, uint64_t length,
                                    PartFile* part,
                                    const std::atomic<bool>* abandon) {
  return Read(stub, offset, length, part, nullptr, abandon);
}

std::string RangeReader::ChunkProblem(const v1::ReadChunk& chunk, uint64_t next,
                                      uint64_t end, bool first) const {
  if (first && (chunk.file_size() != target_.size ||
                chunk.file_sha256() != DigestBytes(target_.sha256))) {
    return "it holds another version of the sidecar than advertised";
  }
  const std::string& data = chunk.data();
  if (chunk.offset() != next || next + data.size() > end) {
    return absl::StrCat("it sent bytes at ", chunk.offset(), "+", data.size(),
                        " when ", next, " was expected");
  }
  if (Crc32c(data) != chunk.chunk_crc32c()) {
    return absl::StrCat("the chunk at ", next, " failed its checksum");
  }
  return std::string();
}

absl::Status RangeReader::Read(v1::TransferPeer::Stub* stub, uint64_t offset,
                               uint64_t length, PartFile* part, Sha256* hasher,
                               const std::atomic<bool>* abandon) {
  grpc::ClientContext ctx;
  // Generous for the size (at least 256 KiB/s); stalls are caught sooner by
  // the watchdog.
  SetDeadline(&ctx,
              absl::Seconds(30) +
                  absl::Seconds(static_cast<double>(length) / (256 << 10)));
  callbacks_.stream_started(&ctx);
  v1::ReadRequest req;
  KeyToProto(target_.key, req.mutable_key());
  req.set_offset(offset);
  req.set_length(length);
  req.set_chunk_bytes(chunk_bytes_);
  std::unique_ptr<grpc::ClientReader<v1::ReadChunk>> reader =
      stub->Read(&ctx, req);
  v1::ReadChunk chunk;
  std::optional<AsyncHasher> async_hasher;
  std::optional<AsyncCheckpointer> checkpointer;
  if (hasher != nullptr) {
    async_hasher.emplace(hasher);
    // What is synced and recorded survives a crash of this process; the
    // next attempt resumes there.
    checkpointer.emplace(part, offset, callbacks_.durable);
  }
  uint64_t next = offset;
  const uint64_t end = offset + length;
  bool first = true;
  std::string problem;
  bool abandoned = false;
  while (reader->Read(&chunk)) {
    callbacks_.stream_alive(&ctx);
    if (abandon != nullptr && abandon->load()) {
      abandoned = true;
      ctx.TryCancel();
      break;
    }
    problem = ChunkProblem(chunk, next, end, first);
    first = false;
    if (!problem.empty()) break;
    const std::string& data = chunk.data();
    bandwidth_->Take(data.size(), priority_);
    callbacks_.stream_alive(&ctx);  // waiting for bandwidth is not a stall
    if (absl::Status w = part->WriteAt(next, data); !w.ok()) {
      ctx.TryCancel();
      reader->Finish();
      callbacks_.stream_ended(&ctx);
      return w;
    }
    next += data.size();
    received_ += data.size();
    if (hasher != nullptr) {
      // The hasher takes the chunk's buffer; the message gets a hashed one
      // back, whose capacity the next Read reuses.
      std::string hashed = async_hasher->TakeBuffer();
      hashed.swap(*chunk.mutable_data());
      async_hasher->Add(std::move(hashed));
      callbacks_.verified(next);
      checkpointer->Written(next);
    }
    callbacks_.chunk_written();
  }
  if (checkpointer) checkpointer->Finish();
  if (async_hasher) async_hasher->Finish();  // the hash covers what we kept
  if (!problem.empty()) {
    corrupt_ = true;
    ctx.TryCancel();
  }
  grpc::Status st = reader->Finish();
  callbacks_.stream_ended(&ctx);
  if (!problem.empty()) {
    return absl::DataLossError(
        absl::StrCat("bad data from ", source_name_, ": ", problem));
  }
  if (abandoned) return absl::CancelledError("another source was faster");
  if (!st.ok()) return FromGrpcStatus(st);
  if (next != end) {
    return absl::UnavailableError(absl::StrCat(
        "stream from ", source_name_, " ended at ", next, " of ", end));
  }
  return absl::OkStatus();
}

}  // namespace sidecar::transfer
