#include "services/transfer/peer_server.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/ordered_reactor.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/unique_fd.h"

namespace sidecar::transfer {
namespace {

// Headroom for a BatchReadItem's fields besides its data.
constexpr size_t kItemHeadroomBytes = 64 << 10;

std::string SidecarPath(const std::string& root, const SidecarKey& key) {
  return absl::StrCat(root, "/", RelativePath(key));
}

absl::Status NotReady(const SidecarKey& key) {
  return absl::NotFoundError(
      absl::StrCat(KeyDebugString(key), " is not ready on this device"));
}

// Opens the local copy of `key` and checks it against its record: a regular
// file, not reached through a final symlink, of the registered size.
absl::StatusOr<UniqueFd> OpenChecked(const std::string& root,
                                     const SidecarKey& key,
                                     const LocalSidecarInfo& info) {
  const std::string path = SidecarPath(root, key);
  int raw;
  do {
    raw = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  } while (raw < 0 && errno == EINTR);
  if (raw < 0) {
    int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::DataLossError(absl::StrCat(
          "local copy of ", KeyDebugString(key), " is missing (registered ",
          info.size, " bytes; expected at ", path, ")"));
    }
    if (err == ELOOP) {
      return absl::FailedPreconditionError(
          absl::StrCat("local copy of ", KeyDebugString(key),
                       " is a symbolic link; it is not served"));
    }
    return absl::InternalError(absl::StrCat("cannot open the local copy of ",
                                            KeyDebugString(key), ": ",
                                            strerror(err)));
  }
  UniqueFd fd(raw);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) {
    return absl::InternalError(absl::StrCat("cannot stat the local copy of ",
                                            KeyDebugString(key), ": ",
                                            strerror(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("local copy of ", KeyDebugString(key),
                     " is not a regular file; it is not served"));
  }
  if (static_cast<uint64_t>(st.st_size) != info.size) {
    return absl::DataLossError(absl::StrCat(
        "local copy of ", KeyDebugString(key), " is damaged (size ", st.st_size,
        ", registered ", info.size, ")"));
  }
  return fd;
}

// Reads exactly `n` bytes at `offset` into `out` (resized to n). DATA_LOSS
// if the file ends first (it shrank since it was checked).
absl::Status ReadExactly(int fd, uint64_t offset, size_t n,
                         const SidecarKey& key, std::string* out) {
  out->resize(n);
  size_t got = 0;
  while (got < n) {
    ssize_t r =
        pread(fd, out->data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0) {
      if (errno == EINTR) continue;
      return absl::InternalError(absl::StrCat("cannot read the local copy of ",
                                              KeyDebugString(key), ": ",
                                              strerror(errno)));
    }
    if (r == 0) {
      return absl::DataLossError(absl::StrCat(
          "local copy of ", KeyDebugString(key), " is damaged (it ends at ",
          offset + got, ", shorter than registered)"));
    }
    got += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

absl::Status ChecksumMismatch(const SidecarKey& key) {
  return absl::DataLossError(
      absl::StrCat("local copy of ", KeyDebugString(key),
                   " does not match its registered checksum"));
}

size_t VarintSize(uint64_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) ++n;
  return n;
}

// Bytes `item` takes as one element of BatchReadResponse.items: its tag,
// its length and itself.
size_t PackedSize(const v1::BatchReadItem& item) {
  const size_t n = item.ByteSizeLong();
  return 1 + VarintSize(n) + n;
}

size_t MaxItemBytes(size_t max_message_bytes) {
  size_t m = std::min<size_t>(max_message_bytes, kMaxMessageBytes);
  return m > kItemHeadroomBytes ? m - kItemHeadroomBytes : 0;
}

}  // namespace

// What the reactors share with the service; they hold it, so the service
// object may go before its last reactor does.
struct PeerServer::Core {
  LocalIndex* index;
  std::string root;
  ThreadPool* pool;
  PeerServerOptions options;
  size_t max_item_bytes;
};

// Reactor lifetime, for both reactors: every pool task holds a count
// (pending_), and the reactor deletes itself when OnDone has run and no task
// is outstanding, whichever comes last. At any time a Read is in exactly one
// of: a pool task queued or running, a write in flight, or finished; so the
// per-call fields below mu_ are only touched by one thread at a time (handed
// over through the pool's queue or gRPC's completion).
class PeerServer::ReadReactor : public OrderedWriteReactor<v1::ReadChunk> {
 public:
  ReadReactor(std::shared_ptr<const Core> core, const v1::ReadRequest& req)
      : core_(std::move(core)), req_(req) {
    absl::StatusOr<ReadCall> call =
        CheckReadRequest(req_, core_->options.default_chunk_bytes);
    if (!call.ok()) {
      Finish(ToGrpcStatus(call.status()));
      return;
    }
    key_ = std::move(call->key);
    chunk_bytes_ = call->chunk_bytes;
    PublishConstruction();
    RunOnPool(&ReadReactor::Open);
  }

  void OnWriteDone(bool ok) override {
    Reaction r(this);
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "write failed"));
      return;
    }
    if (Cancelled()) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    RunOnPool(&ReadReactor::ReadNext);
  }

  void OnCancel() override {
    Reaction r(this);
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }

  void OnDone() override {
    ReactionDone(this);
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = pending_ == 0;
    }
    if (last) delete this;
  }

 private:
  void RunOnPool(void (ReadReactor::*step)()) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
    }
    core_->pool->Schedule([this, step] {
      (this->*step)();
      Release();
    });
  }

  void Release() ABSL_LOCKS_EXCLUDED(mu_) {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --pending_ == 0 && done_;
    }
    if (last) delete this;
  }

  bool Cancelled() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }

  void Fail(const absl::Status& s) { Finish(ToGrpcStatus(s)); }

  // Pool: looks the key up, opens and checks the file, then reads the first
  // chunk.
  void Open() {
    if (Cancelled()) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    absl::StatusOr<std::optional<LocalSidecarInfo>> info =
        core_->index->LookupOne(key_);
    if (!info.ok()) return Fail(info.status());
    if (!info->has_value()) return Fail(NotReady(key_));
    registered_ = (*info)->sha256;
    size_ = (*info)->size;
    absl::StatusOr<UniqueFd> fd = OpenChecked(core_->root, key_, **info);
    if (!fd.ok()) {
      if (absl::IsDataLoss(fd.status())) {
        SC_LOG(WARNING) << fd.status().message();
      }
      return Fail(fd.status());
    }
    fd_ = *std::move(fd);
    absl::StatusOr<ByteRange> range =
        ReadRange(req_.offset(), req_.length(), size_, key_);
    if (!range.ok()) return Fail(range.status());
    next_ = range->begin;
    end_ = range->end;
    whole_file_ = next_ == 0 && end_ == size_ &&
                  size_ <= core_->options.verify_whole_file_max_bytes;
    if (end_ - next_ > chunk_bytes_) {
      posix_fadvise(fd_.get(), static_cast<off_t>(next_),
                    static_cast<off_t>(end_ - next_), POSIX_FADV_SEQUENTIAL);
    }
    first_ = true;
    ReadNext();
  }

  // Pool: reads and hashes the next chunk and writes it; the last chunk
  // goes with the final status.
  void ReadNext() {
    if (Cancelled()) {
      Finish(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
      return;
    }
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(chunk_bytes_, end_ - next_));
    // Only the first chunk carries the file's size and hash. The data keeps
    // its size (Clear() would empty it), so that reading the next chunk
    // into it does not zero-fill it first.
    msg_.clear_file_size();
    msg_.clear_file_sha256();
    msg_.set_offset(next_);
    if (first_) {
      msg_.set_file_size(size_);
      msg_.set_file_sha256(DigestBytes(registered_).data(), 32);
      first_ = false;
    }
    std::string* data = msg_.mutable_data();
    if (absl::Status s = ReadExactly(fd_.get(), next_, n, key_, data);
        !s.ok()) {
      SC_LOG(WARNING) << s.message();
      return Fail(s);
    }
    msg_.set_chunk_crc32c(Crc32c(*data));
    if (whole_file_) whole_.Update(*data);
    next_ += n;
    if (next_ < end_) {
      StartWrite(&msg_);
      return;
    }
    if (whole_file_ && whole_.Finish() != registered_) {
      absl::Status s = ChecksumMismatch(key_);
      SC_LOG(WARNING) << s.message();
      return Fail(s);
    }
    StartWriteAndFinish(&msg_, grpc::WriteOptions(), grpc::Status::OK);
  }

  const std::shared_ptr<const Core> core_;
  const v1::ReadRequest req_;

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;

  // Touched by one step at a time (see the class comment).
  SidecarKey key_;
  uint32_t chunk_bytes_ = 0;
  UniqueFd fd_;
  uint64_t size_ = 0;
  Sha256Digest registered_{};
  uint64_t next_ = 0;
  uint64_t end_ = 0;
  bool first_ = true;
  bool whole_file_ = false;
  Sha256 whole_;
  v1::ReadChunk msg_;
};

// BatchRead: one pool task looks every key up; then consecutive items are
// read whole in groups, one pool task per group (batch_read_group_items and
// batch_read_group_bytes), at most batch_read_ahead items and
// batch_read_ahead_bytes ahead of the network, while one message is written
// at a time. When a write can start, it packs every ready item (read ones
// first, then errors) while the message stays within the target; items pile
// up while a write is in flight, so the slower the network, the fuller the
// messages. Items go out in the order they became ready.
class PeerServer::BatchReactor
    : public OrderedWriteReactor<v1::BatchReadResponse> {
 public:
  BatchReactor(std::shared_ptr<const Core> core,
               const v1::BatchReadRequest& req)
      : core_(std::move(core)) {
    if (absl::Status s = CheckBatchReadSize(req); !s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
    keys_.assign(req.keys().begin(), req.keys().end());
    PublishConstruction();
    {
      absl::MutexLock lock(&mu_);
      ++pending_;
    }
    core_->pool->Schedule([this] {
      LookUp();
      Release();
    });
  }

  void OnWriteDone(bool ok) override {
    Reaction r(this);
    // The message is still ours (writing_ is set): free it before its bytes
    // leave the read-ahead count.
    writing_msg_ = v1::BatchReadResponse();
    Plan plan;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      bytes_ahead_ -= writing_bytes_;
      writing_bytes_ = 0;
      writing_items_ = 0;
      if (!ok) cancelled_ = true;
      plan = PumpLocked();
    }
    Execute(std::move(plan));
  }

  void OnCancel() override {
    Reaction r(this);
    Plan plan;
    {
      absl::MutexLock lock(&mu_);
      cancelled_ = true;
      plan = PumpLocked();
    }
    Execute(std::move(plan));
  }

  void OnDone() override {
    ReactionDone(this);
    bool last;
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
      last = pending_ == 0;
    }
    if (last) delete this;
  }

 private:
  struct Todo {
    uint32_t index;
    SidecarKey key;
    LocalSidecarInfo info;
  };
  // An item ready to write.
  struct Ready {
    v1::BatchReadItem item;
    uint64_t bytes;  // counted in bytes_ahead_ (0 for errors)
    size_t packed;   // PackedSize(item)
  };
  // What to do after releasing mu_: gRPC operations are never started with
  // it held.
  struct Plan {
    std::vector<std::vector<Todo>> groups;  // to read, a pool task each
    bool write = false;
    std::optional<grpc::Status> finish;
  };

  void Release() ABSL_LOCKS_EXCLUDED(mu_) {
    bool last;
    {
      absl::MutexLock lock(&mu_);
      last = --pending_ == 0 && done_;
    }
    if (last) delete this;
  }

  static Ready MakeReady(v1::BatchReadItem item, uint64_t bytes) {
    const size_t packed = PackedSize(item);
    return Ready{std::move(item), bytes, packed};
  }

  // Pool: validates the keys and looks them all up at once.
  void LookUp() {
    std::deque<Ready> errors;
    BatchReadKeys checked = CheckBatchReadKeys(keys_);
    for (const auto& [index, status] : checked.invalid) {
      errors.push_back(MakeReady(ErrorItem(index, status), 0));
    }
    std::vector<SidecarKey>& valid = checked.valid;
    const std::vector<uint32_t>& valid_index = checked.valid_index;
    keys_.clear();
    keys_.shrink_to_fit();
    absl::StatusOr<std::vector<std::optional<LocalSidecarInfo>>> infos;
    if (!valid.empty()) infos = core_->index->Lookup(valid);
    std::deque<Todo> todo;
    if (!valid.empty() && infos.ok()) {
      for (size_t j = 0; j < valid.size(); ++j) {
        const std::optional<LocalSidecarInfo>& info = (*infos)[j];
        if (!info) {
          errors.push_back(
              MakeReady(ErrorItem(valid_index[j], NotReady(valid[j])), 0));
        } else if (info->size > core_->max_item_bytes) {
          errors.push_back(MakeReady(
              ErrorItem(valid_index[j],
                        absl::FailedPreconditionError(absl::StrCat(
                            KeyDebugString(valid[j]), " is ", info->size,
                            " bytes, more than BatchRead sends (",
                            core_->max_item_bytes,
                            "): use Read for large sidecars"))),
              0));
        } else {
          todo.push_back(
              Todo{valid_index[j], std::move(valid[j]), std::move(*info)});
        }
      }
    }
    Plan plan;
    {
      absl::MutexLock lock(&mu_);
      if (!valid.empty() && !infos.ok()) {
        if (!finished_ && !writing_) {
          finished_ = true;
          plan.finish = ToGrpcStatus(infos.status());
        }
      } else {
        ready_ = std::move(errors);
        todo_ = std::move(todo);
        looked_up_ = true;
        plan = PumpLocked();
      }
    }
    Execute(std::move(plan));
  }

  // Pool: reads a group of items, stopping early if the call is cancelled,
  // and hands them over together.
  void ReadGroup(const std::vector<Todo>& group) {
    std::vector<Ready> read;
    read.reserve(group.size());
    for (const Todo& t : group) {
      {
        absl::MutexLock lock(&mu_);
        if (cancelled_) break;
      }
      read.push_back(MakeReady(ReadItem(t), t.info.size));
    }
    Plan plan;
    {
      absl::MutexLock lock(&mu_);
      reads_in_flight_ -= group.size();
      if (cancelled_) {
        // Nothing more is written.
        for (const Todo& t : group) bytes_ahead_ -= t.info.size;
      } else {
        // All were read (cancelled_ never goes back to false). Their bytes
        // stay counted until their write completes.
        for (Ready& r : read) ready_read_.push_back(std::move(r));
      }
      plan = PumpLocked();
    }
    Execute(std::move(plan));
  }

  // Reads one item whole and checks it against its record.
  v1::BatchReadItem ReadItem(const Todo& t) {
    v1::BatchReadItem item;
    item.set_index(t.index);
    absl::StatusOr<UniqueFd> fd = OpenChecked(core_->root, t.key, t.info);
    absl::Status s = fd.status();
    if (s.ok()) {
      s = ReadExactly(fd->get(), 0, t.info.size, t.key, item.mutable_data());
    }
    if (s.ok() && Sha256Of(item.data()) != t.info.sha256) {
      s = ChecksumMismatch(t.key);
    }
    if (s.ok()) {
      item.set_sha256(DigestBytes(t.info.sha256).data(), 32);
      return item;
    }
    if (absl::IsDataLoss(s)) SC_LOG(WARNING) << s.message();
    return ErrorItem(t.index, s);
  }

  static v1::BatchReadItem ErrorItem(size_t index, const absl::Status& s) {
    v1::BatchReadItem item;
    item.set_index(static_cast<uint32_t>(index));
    item.set_status_code(static_cast<int32_t>(s.code()));
    item.set_status_message(std::string(s.message()));
    return item;
  }

  // Whether the next todo item may start being read: within the read-ahead
  // bounds (items being read, read, or in the message being written, and
  // their bytes; at least one item). REQUIRES: mu_ held.
  bool CanReadNextLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (todo_.empty()) return false;
    const PeerServerOptions& o = core_->options;
    const size_t max_ahead =
        static_cast<size_t>(std::max(1, o.batch_read_ahead));
    return reads_in_flight_ + ready_read_.size() + writing_items_ < max_ahead &&
           (bytes_ahead_ == 0 ||
            bytes_ahead_ + todo_.front().info.size <= o.batch_read_ahead_bytes);
  }

  // Decides what to start next; the caller executes the plan after
  // releasing mu_. REQUIRES: mu_ held.
  Plan PumpLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Plan plan;
    if (finished_) return plan;
    if (cancelled_) {
      if (!writing_) {
        finished_ = true;
        plan.finish = grpc::Status(grpc::StatusCode::CANCELLED, "cancelled");
      }
      return plan;
    }
    if (!looked_up_) return plan;
    const PeerServerOptions& o = core_->options;
    const size_t group_items =
        static_cast<size_t>(std::max(1, o.batch_read_group_items));
    // Groups of consecutive items, each at least one item.
    while (CanReadNextLocked()) {
      std::vector<Todo>& group = plan.groups.emplace_back();
      uint64_t group_bytes = 0;
      do {
        const uint64_t size = todo_.front().info.size;
        bytes_ahead_ += size;
        group_bytes += size;
        ++reads_in_flight_;
        group.push_back(std::move(todo_.front()));
        todo_.pop_front();
      } while (group.size() < group_items && CanReadNextLocked() &&
               group_bytes + todo_.front().info.size <=
                   o.batch_read_group_bytes);
      ++pending_;  // released by the group's task
    }
    if (writing_) return plan;
    // One message of what is ready: items read first (they hold memory),
    // then errors, while it stays within the target; the first item alone
    // may be larger (up to max_item_bytes, within the message bound).
    const size_t target =
        std::min({o.batch_message_target_bytes, o.max_batch_message_bytes,
                  static_cast<size_t>(kMaxMessageBytes)});
    size_t message_bytes = 0;
    for (std::deque<Ready>* q : {&ready_read_, &ready_}) {
      while (!q->empty()) {
        Ready& r = q->front();
        if (writing_msg_.items_size() > 0 &&
            message_bytes + r.packed > target) {
          break;
        }
        message_bytes += r.packed;
        writing_bytes_ += r.bytes;
        if (q == &ready_read_) ++writing_items_;
        *writing_msg_.add_items() = std::move(r.item);
        q->pop_front();
      }
    }
    if (writing_msg_.items_size() > 0) {
      writing_ = true;
      plan.write = true;
    } else if (todo_.empty() && reads_in_flight_ == 0) {
      finished_ = true;
      plan.finish = grpc::Status::OK;
    }
    return plan;
  }

  void Execute(Plan plan) ABSL_LOCKS_EXCLUDED(mu_) {
    for (std::vector<Todo>& group : plan.groups) {
      // pending_ was counted by PumpLocked.
      core_->pool->Schedule([this, group = std::move(group)] {
        ReadGroup(group);
        Release();
      });
    }
    if (plan.write) StartWrite(&writing_msg_);
    if (plan.finish) Finish(*std::move(plan.finish));
  }

  const std::shared_ptr<const Core> core_;
  // The request's, until looked up: written by the constructor, then used
  // by the LookUp task alone (handed over through the pool's queue).
  std::vector<v1::SidecarKey> keys_;

  absl::Mutex mu_;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool looked_up_ ABSL_GUARDED_BY(mu_) = false;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  // Items not to be read from disk (errors), ready to write.
  std::deque<Ready> ready_ ABSL_GUARDED_BY(mu_);
  // Items read from disk, ready to write.
  std::deque<Ready> ready_read_ ABSL_GUARDED_BY(mu_);
  std::deque<Todo> todo_ ABSL_GUARDED_BY(mu_);
  // Items in groups scheduled or being read.
  size_t reads_in_flight_ ABSL_GUARDED_BY(mu_) = 0;
  // Bytes of items being read, ready, or being written.
  uint64_t bytes_ahead_ ABSL_GUARDED_BY(mu_) = 0;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  // Of the message being written: its read items and their bytes.
  size_t writing_items_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t writing_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // The message being written; only filled while !writing_ (by PumpLocked,
  // with mu_ held), and emptied by OnWriteDone. Not GUARDED_BY: while
  // writing_ is set, gRPC and then OnWriteDone own it without mu_.
  v1::BatchReadResponse writing_msg_;
};

PeerServer::PeerServer(LocalIndex* index, std::string sidecar_root,
                       ThreadPool* pool, PeerServerOptions options)
    : core_(std::make_shared<const Core>(
          Core{index, std::move(sidecar_root), pool, options,
               MaxItemBytes(options.max_batch_message_bytes)})) {}

PeerServer::~PeerServer() = default;

size_t PeerServer::max_batch_item_bytes() const {
  return core_->max_item_bytes;
}

grpc::ServerWriteReactor<v1::ReadChunk>* PeerServer::Read(
    grpc::CallbackServerContext* ctx, const v1::ReadRequest* req) {
  return new ReadReactor(core_, *req);
}

grpc::ServerWriteReactor<v1::BatchReadResponse>* PeerServer::BatchRead(
    grpc::CallbackServerContext* ctx, const v1::BatchReadRequest* req) {
  return new BatchReactor(core_, *req);
}

}  // namespace sidecar::transfer
