// PieceScheduler: which piece of a multi-source fetch each source fetches
// next, and what has arrived. No I/O and no threads of its own: the
// Fetcher's workers, one per source, call it concurrently.
//
// The file is cut into pieces of piece_bytes (the last one may be shorter).
// Pieces are handed out lowest first. When none is left to hand out, a
// source that asks fetches a piece another source is still on (the
// "endgame"): otherwise the slowest holder's last piece decides when the
// fetch ends. The first copy of a piece to arrive wins; the other copy's
// abandon flag is set so its stream stops. A piece that fails goes back to
// the front of the queue, unless another source is still on it.
//
// Thread-safe.
#ifndef SIDECAR_SERVICES_TRANSFER_PIECE_SCHEDULER_H_
#define SIDECAR_SERVICES_TRANSFER_PIECE_SCHEDULER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace sidecar::transfer {

class PieceScheduler {
 public:
  // A piece handed to one source: bytes [offset, offset + length).
  struct Piece {
    size_t index = 0;
    uint64_t offset = 0;
    uint64_t length = 0;
    // Another source is on this piece already (the endgame).
    bool duplicate = false;
  };

  // What became of one copy of a piece (Finished).
  enum class Result {
    // This copy completed the piece and is the one kept.
    kWon,
    // Another copy completed the piece first; this one is not needed,
    // whether it succeeded or not.
    kAlreadyDone,
    // This copy failed and no other source is on the piece: it is back at
    // the front of the queue.
    kRequeued,
    // This copy failed; another source is still on the piece.
    kLeftToOther,
  };

  struct Outcome {
    Result result = Result::kAlreadyDone;
    // Set iff this call made the contiguous verified prefix grow: its new
    // length in bytes. Only a kWon outcome can have it.
    std::optional<uint64_t> advanced_prefix;
  };

  // A file of `size` bytes cut into pieces of `piece_bytes` (> 0; 0 is taken
  // as 1). The first `resumed_bytes`, rounded down to whole pieces, are kept
  // from an earlier attempt: those pieces count as done and are never handed
  // out.
  PieceScheduler(uint64_t size, uint64_t piece_bytes, uint64_t resumed_bytes);

  PieceScheduler(const PieceScheduler&) = delete;
  PieceScheduler& operator=(const PieceScheduler&) = delete;

  // Number of pieces of the file, kept ones included.
  size_t pieces() const { return pieces_; }

  // Bytes kept from the earlier attempt (whole pieces), where the part file
  // must resume.
  uint64_t kept_bytes() const { return kept_bytes_; }

  // The next piece for a source to fetch: the lowest one not handed out
  // yet; when every piece is handed out, the lowest one that exactly one
  // source is still on (duplicate set). nullopt when there is nothing left
  // to help with: the source is done.
  // Every piece returned must be passed to Finished exactly once.
  std::optional<Piece> Next() ABSL_LOCKS_EXCLUDED(mu_);

  // Records how one copy of piece `index` (from Next) ended: `ok` if all
  // its bytes arrived and are written. The first successful copy wins,
  // marks the piece done and sets its abandon flag. A failed copy puts the
  // piece back at the front of the queue unless another source is on it.
  // An `index` that is out of range or not in flight changes nothing and
  // reports kAlreadyDone.
  Outcome Finished(size_t index, bool ok) ABSL_LOCKS_EXCLUDED(mu_);

  // Set once piece `index` is done, so that a stream still fetching another
  // copy of it can stop early. Read without locking; valid as long as the
  // scheduler lives. Requires index < pieces().
  const std::atomic<bool>* abandon_flag(size_t index) const {
    return &abandon_[index];
  }

  // Length in bytes of the longest prefix of the file made of done pieces
  // (kept ones included); it only grows. The file's size once Complete().
  uint64_t VerifiedPrefix() const ABSL_LOCKS_EXCLUDED(mu_);

  // True once every piece is done (at once for an empty file).
  bool Complete() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  uint64_t PrefixBytesLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t size_;
  const uint64_t piece_bytes_;
  const size_t pieces_;
  const uint64_t kept_bytes_;
  const std::unique_ptr<std::atomic<bool>[]> abandon_;

  mutable absl::Mutex mu_;
  std::vector<bool> done_ ABSL_GUARDED_BY(mu_);
  // Sources on each piece now.
  std::vector<int> in_flight_ ABSL_GUARDED_BY(mu_);
  // Pieces not handed out, in the order they will be.
  std::deque<size_t> todo_ ABSL_GUARDED_BY(mu_);
  // Pieces [0, prefix_pieces_) are done.
  size_t prefix_pieces_ ABSL_GUARDED_BY(mu_) = 0;
  size_t done_count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_PIECE_SCHEDULER_H_
