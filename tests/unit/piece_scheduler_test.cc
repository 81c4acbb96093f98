#include "services/transfer/piece_scheduler.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace sidecar::transfer {
namespace {

using Result = PieceScheduler::Result;

// Takes the next piece, which must exist.
PieceScheduler::Piece MustNext(PieceScheduler& s) {
  std::optional<PieceScheduler::Piece> p = s.Next();
  EXPECT_TRUE(p.has_value());
  return p.value_or(PieceScheduler::Piece{});
}

TEST(PieceSchedulerTest, HandsOutPiecesInOrderAndCompletes) {
  PieceScheduler s(/*size=*/40, /*piece_bytes=*/10, /*resumed_bytes=*/0);
  EXPECT_EQ(s.pieces(), 4u);
  EXPECT_EQ(s.kept_bytes(), 0u);
  EXPECT_FALSE(s.Complete());
  for (size_t i = 0; i < 4; ++i) {
    PieceScheduler::Piece p = MustNext(s);
    EXPECT_EQ(p.index, i);
    EXPECT_EQ(p.offset, i * 10);
    EXPECT_EQ(p.length, 10u);
    EXPECT_FALSE(p.duplicate);
    PieceScheduler::Outcome o = s.Finished(p.index, true);
    EXPECT_EQ(o.result, Result::kWon);
    EXPECT_EQ(o.advanced_prefix, (i + 1) * 10);
  }
  EXPECT_TRUE(s.Complete());
  EXPECT_EQ(s.VerifiedPrefix(), 40u);
  EXPECT_FALSE(s.Next().has_value());
}

TEST(PieceSchedulerTest, ResumesAfterTheKeptWholePieces) {
  // 25 bytes were verified: two whole pieces are kept, the third is fetched
  // again from its start.
  PieceScheduler s(40, 10, 25);
  EXPECT_EQ(s.kept_bytes(), 20u);
  EXPECT_EQ(s.VerifiedPrefix(), 20u);
  EXPECT_TRUE(*s.abandon_flag(0));
  EXPECT_TRUE(*s.abandon_flag(1));
  EXPECT_FALSE(*s.abandon_flag(2));
  PieceScheduler::Piece p = MustNext(s);
  EXPECT_EQ(p.index, 2u);
  EXPECT_EQ(p.offset, 20u);
  EXPECT_EQ(s.Finished(p.index, true).advanced_prefix, 30u);
}

TEST(PieceSchedulerTest, ResumedBeyondTheSizeKeepsOnlyWholePieces) {
  PieceScheduler s(40, 10, 1000);
  EXPECT_EQ(s.kept_bytes(), 40u);
  EXPECT_TRUE(s.Complete());
  EXPECT_FALSE(s.Next().has_value());
}

TEST(PieceSchedulerTest, LastPieceIsShort) {
  PieceScheduler s(25, 10, 0);
  ASSERT_EQ(s.pieces(), 3u);
  MustNext(s);
  MustNext(s);
  PieceScheduler::Piece last = MustNext(s);
  EXPECT_EQ(last.index, 2u);
  EXPECT_EQ(last.offset, 20u);
  EXPECT_EQ(last.length, 5u);
  s.Finished(0, true);
  s.Finished(1, true);
  EXPECT_EQ(s.Finished(2, true).advanced_prefix, 25u);
  EXPECT_EQ(s.VerifiedPrefix(), 25u);
  EXPECT_TRUE(s.Complete());
}

TEST(PieceSchedulerTest, ResumeOfAFileWithAShortLastPieceRefetchesIt) {
  // The whole file was verified, but only whole pieces are kept.
  PieceScheduler s(25, 10, 25);
  EXPECT_EQ(s.kept_bytes(), 20u);
  PieceScheduler::Piece p = MustNext(s);
  EXPECT_EQ(p.index, 2u);
  EXPECT_EQ(p.length, 5u);
}

TEST(PieceSchedulerTest, ZeroSizeFileIsCompleteAtOnce) {
  PieceScheduler s(0, 10, 0);
  EXPECT_EQ(s.pieces(), 0u);
  EXPECT_TRUE(s.Complete());
  EXPECT_EQ(s.VerifiedPrefix(), 0u);
  EXPECT_FALSE(s.Next().has_value());
  EXPECT_EQ(s.Finished(0, true).result, Result::kAlreadyDone);
}

TEST(PieceSchedulerTest, OnePieceFile) {
  PieceScheduler s(7, 10, 0);
  ASSERT_EQ(s.pieces(), 1u);
  PieceScheduler::Piece p = MustNext(s);
  EXPECT_EQ(p.length, 7u);
  // A second source helps with the only piece.
  PieceScheduler::Piece dup = MustNext(s);
  EXPECT_TRUE(dup.duplicate);
  EXPECT_EQ(dup.index, 0u);
  EXPECT_FALSE(s.Next().has_value());
  EXPECT_EQ(s.Finished(0, true).advanced_prefix, 7u);
  EXPECT_EQ(s.Finished(0, true).result, Result::kAlreadyDone);
  EXPECT_TRUE(s.Complete());
}

TEST(PieceSchedulerTest, ZeroPieceBytesIsTakenAsOne) {
  PieceScheduler s(3, 0, 0);
  EXPECT_EQ(s.pieces(), 3u);
  EXPECT_EQ(MustNext(s).length, 1u);
}

TEST(PieceSchedulerTest, EndgameDuplicatesAPieceAndTheFirstCopyWins) {
  PieceScheduler s(20, 10, 0);
  PieceScheduler::Piece a = MustNext(s);  // slow source
  PieceScheduler::Piece b = MustNext(s);  // fast source
  ASSERT_EQ(s.Finished(b.index, true).result, Result::kWon);
  // Nothing left to hand out: the fast source helps with piece 0.
  PieceScheduler::Piece help = MustNext(s);
  EXPECT_EQ(help.index, a.index);
  EXPECT_TRUE(help.duplicate);
  // Two copies at most: a third source has nothing to help with.
  EXPECT_FALSE(s.Next().has_value());
  EXPECT_FALSE(*s.abandon_flag(a.index));
  PieceScheduler::Outcome won = s.Finished(help.index, true);
  EXPECT_EQ(won.result, Result::kWon);
  EXPECT_EQ(won.advanced_prefix, 20u);
  // The slow copy is told to stop, and loses however it ends.
  EXPECT_TRUE(*s.abandon_flag(a.index));
  PieceScheduler::Outcome lost = s.Finished(a.index, true);
  EXPECT_EQ(lost.result, Result::kAlreadyDone);
  EXPECT_FALSE(lost.advanced_prefix.has_value());
  EXPECT_TRUE(s.Complete());
}

TEST(PieceSchedulerTest, FailedDuplicateOfADonePieceIsNotRequeued) {
  PieceScheduler s(10, 10, 0);
  MustNext(s);
  MustNext(s);  // the endgame copy
  EXPECT_EQ(s.Finished(0, true).result, Result::kWon);
  EXPECT_EQ(s.Finished(0, false).result, Result::kAlreadyDone);
  EXPECT_FALSE(s.Next().has_value());
}

TEST(PieceSchedulerTest, FailedPieceGoesBackToTheFrontOfTheQueue) {
  PieceScheduler s(30, 10, 0);
  PieceScheduler::Piece p0 = MustNext(s);
  EXPECT_EQ(s.Finished(p0.index, false).result, Result::kRequeued);
  EXPECT_FALSE(*s.abandon_flag(0));
  // Piece 0 comes back before piece 1.
  PieceScheduler::Piece again = MustNext(s);
  EXPECT_EQ(again.index, 0u);
  EXPECT_FALSE(again.duplicate);
  EXPECT_EQ(MustNext(s).index, 1u);
}

TEST(PieceSchedulerTest, FailedPieceStaysWithTheOtherSourceOnIt) {
  PieceScheduler s(10, 10, 0);
  MustNext(s);
  PieceScheduler::Piece dup = MustNext(s);
  ASSERT_TRUE(dup.duplicate);
  // One copy fails: the other source is still on it, so it is not queued.
  EXPECT_EQ(s.Finished(0, false).result, Result::kLeftToOther);
  // The remaining copy is alone again, so it may be helped with.
  PieceScheduler::Piece help = MustNext(s);
  EXPECT_TRUE(help.duplicate);
  // Both fail: the piece is queued for whoever asks next.
  EXPECT_EQ(s.Finished(0, false).result, Result::kLeftToOther);
  EXPECT_EQ(s.Finished(0, false).result, Result::kRequeued);
  PieceScheduler::Piece retry = MustNext(s);
  EXPECT_EQ(retry.index, 0u);
  EXPECT_FALSE(retry.duplicate);
  EXPECT_EQ(s.Finished(0, true).advanced_prefix, 10u);
}

TEST(PieceSchedulerTest, PrefixGrowsOnlyOverContiguousPieces) {
  PieceScheduler s(40, 10, 0);
  for (int i = 0; i < 4; ++i) MustNext(s);
  // Pieces 1 and 3 arrive first: no prefix yet.
  PieceScheduler::Outcome o1 = s.Finished(1, true);
  EXPECT_EQ(o1.result, Result::kWon);
  EXPECT_FALSE(o1.advanced_prefix.has_value());
  EXPECT_FALSE(s.Finished(3, true).advanced_prefix.has_value());
  EXPECT_EQ(s.VerifiedPrefix(), 0u);
  // Piece 0 makes the prefix cover 0 and 1.
  EXPECT_EQ(s.Finished(0, true).advanced_prefix, 20u);
  EXPECT_EQ(s.VerifiedPrefix(), 20u);
  // Piece 2 closes the gap up to the end.
  EXPECT_EQ(s.Finished(2, true).advanced_prefix, 40u);
  EXPECT_TRUE(s.Complete());
}

TEST(PieceSchedulerTest, FinishedWithAPieceNotInFlightChangesNothing) {
  PieceScheduler s(20, 10, 0);
  EXPECT_EQ(s.Finished(1, true).result, Result::kAlreadyDone);
  EXPECT_EQ(s.Finished(99, true).result, Result::kAlreadyDone);
  EXPECT_EQ(s.VerifiedPrefix(), 0u);
  EXPECT_EQ(MustNext(s).index, 0u);
  EXPECT_EQ(MustNext(s).index, 1u);
}

// Several sources drain the scheduler at once, some copies failing: every
// piece ends done with exactly one winning copy, and the prefix reaches the
// size.
TEST(PieceSchedulerTest, ConcurrentSourcesFinishEveryPieceExactlyOnce) {
  constexpr uint64_t kPiece = 4096;
  constexpr uint64_t kSize = 997 * kPiece + 123;
  PieceScheduler s(kSize, kPiece, 3 * kPiece + 5);
  std::vector<std::atomic<int>> wins(s.pieces());
  std::atomic<uint64_t> max_prefix{0};
  absl::Mutex mu;
  std::vector<uint64_t> prefixes;  // in the order Finished returned them
  auto source = [&](int id) {
    uint64_t n = 0;
    while (std::optional<PieceScheduler::Piece> p = s.Next()) {
      // Every fifth copy of one source fails, as a broken stream would.
      bool ok = !(id == 0 && ++n % 5 == 0);
      PieceScheduler::Outcome o = s.Finished(p->index, ok);
      if (o.result == Result::kWon) wins[p->index]++;
      if (o.advanced_prefix.has_value()) {
        absl::MutexLock lock(&mu);
        prefixes.push_back(*o.advanced_prefix);
      }
      uint64_t seen = max_prefix.load();
      while (o.advanced_prefix.value_or(0) > seen &&
             !max_prefix.compare_exchange_weak(seen, *o.advanced_prefix)) {
      }
    }
  };
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back(source, i);
  for (std::thread& t : threads) t.join();

  EXPECT_TRUE(s.Complete());
  EXPECT_EQ(s.VerifiedPrefix(), kSize);
  EXPECT_EQ(max_prefix.load(), kSize);
  for (size_t i = 0; i < s.pieces(); ++i) {
    EXPECT_EQ(wins[i].load(), i < 3 ? 0 : 1) << "piece " << i;
  }
  // Only the copy that made the prefix grow reports it, so no length is
  // reported twice. (The threads record them after Finished returns, so
  // their order here says nothing.)
  ASSERT_FALSE(prefixes.empty());
  std::sort(prefixes.begin(), prefixes.end());
  EXPECT_EQ(std::adjacent_find(prefixes.begin(), prefixes.end()),
            prefixes.end());
  EXPECT_EQ(prefixes.back(), kSize);
}

}  // namespace
}  // namespace sidecar::transfer
