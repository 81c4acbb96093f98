#include "services/transfer/piece_scheduler.h"

#include <algorithm>

namespace sidecar::transfer {

namespace {

uint64_t PieceCount(uint64_t size, uint64_t piece_bytes) {
  return size / piece_bytes + (size % piece_bytes != 0 ? 1 : 0);
}

}  // namespace

PieceScheduler::PieceScheduler(uint64_t size, uint64_t piece_bytes,
                               uint64_t resumed_bytes)
    : size_(size),
      piece_bytes_(std::max<uint64_t>(piece_bytes, 1)),
      pieces_(PieceCount(size_, piece_bytes_)),
      // Only whole pieces are kept: a piece is the unit that is verified
      // as arrived, so a partial one is fetched again.
      kept_bytes_(std::min(resumed_bytes, size_) / piece_bytes_ * piece_bytes_),
      abandon_(new std::atomic<bool>[pieces_]),
      done_(pieces_, false),
      in_flight_(pieces_, 0) {
  const size_t kept = kept_bytes_ / piece_bytes_;
  for (size_t i = 0; i < pieces_; ++i) {
    abandon_[i] = i < kept;
    done_[i] = i < kept;
    if (i >= kept) todo_.push_back(i);
  }
  prefix_pieces_ = kept;
  done_count_ = kept;
}

std::optional<PieceScheduler::Piece> PieceScheduler::Next() {
  absl::MutexLock lock(&mu_);
  Piece p;
  if (!todo_.empty()) {
    p.index = todo_.front();
    todo_.pop_front();
  } else {
    // Endgame: help with a piece exactly one source is on. Two copies at
    // most, so that a stuck piece does not take every source.
    size_t i = prefix_pieces_;
    while (i < pieces_ && (done_[i] || in_flight_[i] != 1)) ++i;
    if (i == pieces_) return std::nullopt;
    p.index = i;
    p.duplicate = true;
  }
  ++in_flight_[p.index];
  p.offset = p.index * piece_bytes_;
  p.length = std::min(piece_bytes_, size_ - p.offset);
  return p;
}

PieceScheduler::Outcome PieceScheduler::Finished(size_t index, bool ok) {
  absl::MutexLock lock(&mu_);
  Outcome out;
  if (index >= pieces_ || in_flight_[index] == 0) return out;
  --in_flight_[index];
  if (done_[index]) return out;  // the other copy arrived first
  if (!ok) {
    if (in_flight_[index] == 0) {
      todo_.push_front(index);
      out.result = Result::kRequeued;
    } else {
      out.result = Result::kLeftToOther;
    }
    return out;
  }
  out.result = Result::kWon;
  done_[index] = true;
  ++done_count_;
  abandon_[index] = true;
  if (index == prefix_pieces_) {
    while (prefix_pieces_ < pieces_ && done_[prefix_pieces_]) ++prefix_pieces_;
    out.advanced_prefix = PrefixBytesLocked();
  }
  return out;
}

uint64_t PieceScheduler::VerifiedPrefix() const {
  absl::MutexLock lock(&mu_);
  return PrefixBytesLocked();
}

bool PieceScheduler::Complete() const {
  absl::MutexLock lock(&mu_);
  return done_count_ == pieces_;
}

uint64_t PieceScheduler::PrefixBytesLocked() const {
  return std::min<uint64_t>(size_, prefix_pieces_ * piece_bytes_);
}

}  // namespace sidecar::transfer
