// RangeReader: streams a byte range of one sidecar from one holder's
// TransferPeer.Read into a part file, checking every chunk: the version
// (size and SHA-256 the first chunk names), the offset, and its CRC-32C.
// The Fetcher's single-source fetch reads the rest of the file in order
// (ReadInOrder, which also hashes the bytes and makes progress durable as
// it goes); a multi-source fetch reads pieces (ReadPiece).
//
// Not thread-safe: one reader per thread that streams from one source. The
// callbacks are called on that thread, except Callbacks::durable (on the
// checkpointer's own thread).
#ifndef SIDECAR_SERVICES_TRANSFER_RANGE_READER_H_
#define SIDECAR_SERVICES_TRANSFER_RANGE_READER_H_

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "services/transfer/bandwidth.h"
#include "services/transfer/store_writer.h"
#include "sidecar/v1/transfer.grpc.pb.h"

namespace sidecar::transfer {

// The version of a sidecar a reader accepts: a source whose first chunk
// names another size or SHA-256 holds another version.
struct RangeTarget {
  SidecarKey key;
  uint64_t size = 0;
  Sha256Digest sha256{};
};

class RangeReader {
 public:
  // What the reader tells the fetch it belongs to. Every member must be set.
  struct Callbacks {
    // Before a stream starts: registers `ctx` so that the stall watchdog and
    // a stop can cancel it; cancels it at once if the fetch has stopped.
    std::function<void(grpc::ClientContext*)> stream_started;
    // A message arrived on `ctx` (the stall watchdog's clock).
    std::function<void(grpc::ClientContext*)> stream_alive;
    // `ctx`'s stream has ended and it is about to be destroyed.
    std::function<void(grpc::ClientContext*)> stream_ended;
    // ReadInOrder: bytes [0, n) of the file are written and handed to the
    // hasher.
    std::function<void(uint64_t n)> verified;
    // ReadInOrder, on the checkpointer's thread: bytes [0, n) of the file
    // are synced, so they may be recorded as the job's progress.
    std::function<void(uint64_t n)> durable;
    // After each chunk written (for progress reports; the callee limits
    // how often it reports).
    std::function<void()> chunk_written;
  };

  // `source_name` names the holder in error messages. `chunk_bytes` goes in
  // every ReadRequest (0: the server's choice). Received bytes are taken
  // from `bandwidth` at `priority`; it must outlive the reader.
  RangeReader(RangeTarget target, std::string source_name, uint32_t chunk_bytes,
              Bandwidth* bandwidth, v1::Priority priority, Callbacks callbacks);

  RangeReader(const RangeReader&) = delete;
  RangeReader& operator=(const RangeReader&) = delete;

  // Streams bytes [offset, offset + length) from `stub` into `part` and
  // feeds them, in order, to `hasher` (which must already hold the bytes
  // before `offset`). A thread of its own hashes beside the writes, and
  // another syncs `part` every few MiB and reports the synced length
  // (Callbacks::durable). OK once every byte is written (not synced);
  // DATA_LOSS "bad data from ..." if the source sent another version,
  // bytes not asked for, or a chunk that fails its checksum (corrupt() is
  // then set); UNAVAILABLE if the stream ended early; the write's error if
  // `part` could not be written; else the RPC's error.
  absl::Status ReadInOrder(v1::TransferPeer::Stub* stub, uint64_t offset,
                           uint64_t length, PartFile* part, Sha256* hasher);

  // Streams one piece, bytes [offset, offset + length), from `stub` into
  // `part`, with the errors of ReadInOrder. Once `*abandon` is set (another
  // source delivered the piece) the stream stops at the next message with
  // CANCELLED. `abandon` must outlive the call.
  absl::Status ReadPiece(v1::TransferPeer::Stub* stub, uint64_t offset,
                         uint64_t length, PartFile* part,
                         const std::atomic<bool>* abandon);
  // Why `chunk`, expected at byte `next` of a range that ends at `end`,
  // is bad data; empty if it is good. The stream's `first` chunk must also
  // name the target's size and SHA-256.
  std::string ChunkProblem(const v1::ReadChunk& chunk, uint64_t next,
                           uint64_t end, bool first) const;

  // Bytes written to part files by this reader's calls so far.
  uint64_t received() const { return received_; }
  // Whether a call so far got bad data from the source (DATA_LOSS).
  bool corrupt() const { return corrupt_; }

 private:
  absl::Status Read(v1::TransferPeer::Stub* stub, uint64_t offset,
                    uint64_t length, PartFile* part, Sha256* hasher,
                    const std::atomic<bool>* abandon);

  const RangeTarget target_;
  const std::string source_name_;
  const uint32_t chunk_bytes_;
  Bandwidth* const bandwidth_;
  const v1::Priority priority_;
  const Callbacks callbacks_;
  uint64_t received_ = 0;
  bool corrupt_ = false;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_RANGE_READER_H_
