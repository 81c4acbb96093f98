// StoreWriter on a temporary directory: part files, resume, commit, cleanup.
#include "services/transfer/store_writer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "tests/support/test_data.h"

namespace sidecar::transfer {
namespace {

namespace fs = std::filesystem;
using ::sidecar::testing::RandomBytes;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, absl::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

SidecarKey TestKey() {
  return SidecarKey{*Uuid::Parse("550e8400-e29b-41d4-a716-446655440000"),
                    v1::SIDECAR_KIND_PROXY, "proxy_scrub",
                    v1::SIDECAR_FORMAT_MP4};
}

class StoreWriterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "store_writer_XXXXXX");
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    root_ = dir_ + "/sidecars";  // Open creates it
    absl::StatusOr<std::unique_ptr<StoreWriter>> w = StoreWriter::Open(root_);
    ASSERT_TRUE(w.ok()) << w.status();
    writer_ = std::move(*w);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string dir_;
  std::string root_;
  std::unique_ptr<StoreWriter> writer_;
};

TEST_F(StoreWriterTest, OpenCreatesIncomingDirectory) {
  EXPECT_TRUE(fs::is_directory(root_ + "/.incoming"));
  EXPECT_EQ(writer_->PartPath("abc"), root_ + "/.incoming/abc.part");
}

TEST_F(StoreWriterTest, RejectsJobIdsThatAreNotUuids) {
  for (const char* bad : {"", "../x", "abc", "a/b"}) {
    absl::StatusOr<PartFile> part = writer_->OpenPart(bad, std::nullopt, 0);
    EXPECT_EQ(part.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(writer_->Discard(bad).code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(StoreWriterTest, ResumeKeepsExactlyThePrefixAndItsHash) {
  const std::string id = Uuid::Random().ToString();
  const std::string data = RandomBytes(3 * (1 << 20) + 12345, 1);
  {
    absl::StatusOr<PartFile> part = writer_->OpenPart(id, data.size(), 0);
    ASSERT_TRUE(part.ok()) << part.status();
    EXPECT_EQ(part->resumed_bytes(), 0u);
    // Write more than will be kept: a resume drops the unverified tail.
    ASSERT_TRUE(part->Append(data.substr(0, 2 * (1 << 20) + 999)).ok());
    ASSERT_TRUE(part->Sync().ok());
  }
  const uint64_t keep = (1 << 20) + 777;  // not a buffer multiple
  absl::StatusOr<PartFile> part = writer_->OpenPart(id, data.size(), keep);
  ASSERT_TRUE(part.ok()) << part.status();
  EXPECT_EQ(part->resumed_bytes(), keep);
  EXPECT_EQ(part->Size(), keep);
  EXPECT_EQ(fs::file_size(writer_->PartPath(id)), keep);
  EXPECT_EQ(ReadFile(writer_->PartPath(id)), data.substr(0, keep));

  // The re-computed state continues over the rest to the whole file's hash.
  Sha256 resumed = part->TakePrefixHash();
  const std::string rest = data.substr(keep);
  ASSERT_TRUE(part->Append(rest).ok());
  resumed.Update(rest);
  const Sha256Digest whole = resumed.Finish();
  EXPECT_EQ(DigestToHex(whole), DigestToHex(Sha256Of(data)));

  absl::StatusOr<CommittedFile> done = writer_->CommitVerified(
      id, TestKey(), whole, Sha256Of(data), data.size());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(ReadFile(done->path), data);
}

TEST_F(StoreWriterTest, ResumedPrefixHashEqualsFreshHashOfPrefix) {
  const std::string id = Uuid::Random().ToString();
  const std::string data = RandomBytes(200000, 2);
  {
    absl::StatusOr<PartFile> part = writer_->OpenPart(id, std::nullopt, 0);
    ASSERT_TRUE(part.ok());
    ASSERT_TRUE(part->Append(data).ok());
  }
  for (uint64_t keep : {uint64_t{1}, uint64_t{65536}, uint64_t{150001}}) {
    absl::StatusOr<PartFile> part = writer_->OpenPart(id, std::nullopt, keep);
    ASSERT_TRUE(part.ok());
    EXPECT_EQ(part->Size(), keep);
    EXPECT_EQ(DigestToHex(part->TakePrefixHash().Finish()),
              DigestToHex(Sha256Of(data.substr(0, keep))))
        << keep;
    // Restore the full part for the next (shorter) round.
    ASSERT_TRUE(part->WriteAt(0, data).ok());
  }
}

TEST_F(StoreWriterTest, ResumeBeyondPartOrWithoutPartKeepsWhatExists) {
  const std::string id = Uuid::Random().ToString();
  absl::StatusOr<PartFile> part = writer_->OpenPart(id, std::nullopt, 500);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(part->resumed_bytes(), 0u);  // nothing to resume
  ASSERT_TRUE(part->Append("hello").ok());
  absl::StatusOr<PartFile> again = writer_->OpenPart(id, std::nullopt, 500);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->resumed_bytes(), 5u);
  EXPECT_EQ(DigestToHex(again->TakePrefixHash().Finish()),
            DigestToHex(Sha256Of("hello")));
  // resume_from 0 starts afresh.
  absl::StatusOr<PartFile> fresh = writer_->OpenPart(id, std::nullopt, 0);
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(fresh->Size(), 0u);
  EXPECT_EQ(fs::file_size(writer_->PartPath(id)), 0u);
}

TEST_F(StoreWriterTest, WriteAtRangesOutOfOrderThenCommit) {
  const std::string id = Uuid::Random().ToString();
  const std::string data = RandomBytes(1000000, 3);
  absl::StatusOr<PartFile> part = writer_->OpenPart(id, data.size(), 0);
  ASSERT_TRUE(part.ok());
  // Four ranges from "different sources", last first.
  const uint64_t cuts[] = {0, 262144, 500000, 777777, data.size()};
  for (int r : {3, 1, 2, 0}) {
    ASSERT_TRUE(
        part->WriteAt(cuts[r], data.substr(cuts[r], cuts[r + 1] - cuts[r]))
            .ok());
  }
  EXPECT_EQ(part->Size(), data.size());
  // Past the expected size is refused.
  EXPECT_EQ(part->WriteAt(data.size() - 1, "xy").code(),
            absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(part->Sync().ok());
  absl::StatusOr<CommittedFile> done =
      writer_->Commit(id, TestKey(), Sha256Of(data));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(done->size, data.size());
  EXPECT_EQ(done->sha256, Sha256Of(data));
  EXPECT_EQ(ReadFile(done->path), data);
  EXPECT_FALSE(fs::exists(writer_->PartPath(id)));
}

// A multi-source fetch writes its pieces from one thread per source: the
// size is the furthest end whatever the interleaving (ThreadSanitizer found
// the unsynchronized update), and the bytes land where they belong.
TEST_F(StoreWriterTest, ConcurrentWritersOfDisjointRanges) {
  const std::string id = Uuid::Random().ToString();
  constexpr size_t kPiece = 4096;
  constexpr int kThreads = 4;
  constexpr int kPiecesEach = 64;
  const std::string data = RandomBytes(kPiece * kThreads * kPiecesEach, 4);
  absl::StatusOr<PartFile> part = writer_->OpenPart(id, data.size(), 0);
  ASSERT_TRUE(part.ok());
  std::vector<std::thread> writers;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      // Thread t writes pieces t, t + kThreads, ...: interleaved with the
      // others, the last piece from the last thread.
      for (int i = 0; i < kPiecesEach; ++i) {
        const size_t off = (static_cast<size_t>(i) * kThreads + t) * kPiece;
        if (!part->WriteAt(off, data.substr(off, kPiece)).ok()) ++failures;
      }
    });
  }
  for (std::thread& w : writers) w.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(part->Size(), data.size());
  ASSERT_TRUE(part->Sync().ok());
  absl::StatusOr<CommittedFile> done =
      writer_->Commit(id, TestKey(), Sha256Of(data));
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(ReadFile(done->path), data);
}

TEST_F(StoreWriterTest, CommitCreatesLayoutPath) {
  const std::string id = Uuid::Random().ToString();
  absl::StatusOr<PartFile> part = writer_->OpenPart(id, std::nullopt, 0);
  ASSERT_TRUE(part.ok());
  ASSERT_TRUE(part->Append("proxy bytes").ok());
  absl::StatusOr<CommittedFile> done =
      writer_->Commit(id, TestKey(), Sha256Of("proxy bytes"));
  ASSERT_TRUE(done.ok()) << done.status();
  const std::string expected =
      root_ +
      "/content/55/0e/550e8400-e29b-41d4-a716-446655440000/proxies/"
      "proxy_scrub.mp4";
  EXPECT_EQ(done->path, expected);
  EXPECT_EQ(writer_->FinalPath(TestKey()), expected);
  EXPECT_EQ(ReadFile(expected), "proxy bytes");

  // A second commit of the same key replaces the file atomically.
  const std::string id2 = Uuid::Random().ToString();
  absl::StatusOr<PartFile> part2 = writer_->OpenPart(id2, std::nullopt, 0);
  ASSERT_TRUE(part2.ok());
  ASSERT_TRUE(part2->Append("newer bytes").ok());
  ASSERT_TRUE(writer_->Commit(id2, TestKey(), Sha256Of("newer bytes")).ok());
  EXPECT_EQ(ReadFile(expected), "newer bytes");
}

TEST_F(StoreWriterTest, CommitWithWrongShaIsDataLossAndLeavesNothing) {
  const std::string id = Uuid::Random().ToString();
  absl::StatusOr<PartFile> part = writer_->OpenPart(id, std::nullopt, 0);
  ASSERT_TRUE(part.ok());
  ASSERT_TRUE(part->Append("corrupted bytes").ok());
  const Sha256Digest expected = Sha256Of("the real bytes");
  absl::StatusOr<CommittedFile> done = writer_->Commit(id, TestKey(), expected);
  ASSERT_EQ(done.status().code(), absl::StatusCode::kDataLoss) << done.status();
  EXPECT_NE(done.status().message().find(DigestToHex(expected)),
            absl::string_view::npos)
      << done.status();
  EXPECT_NE(
      done.status().message().find(DigestToHex(Sha256Of("corrupted bytes"))),
      absl::string_view::npos)
      << done.status();
  EXPECT_FALSE(fs::exists(writer_->FinalPath(TestKey())));
  EXPECT_FALSE(fs::exists(writer_->PartPath(id)));
  // Nothing left to commit.
  EXPECT_EQ(writer_->Commit(id, TestKey(), expected).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(StoreWriterTest, CommitVerifiedChecksDigestAndSize) {
  const std::string data = "some sidecar bytes";
  const Sha256Digest sha = Sha256Of(data);
  auto write_part = [&](const std::string& id) {
    absl::StatusOr<PartFile> part = writer_->OpenPart(id, std::nullopt, 0);
    ASSERT_TRUE(part.ok());
    ASSERT_TRUE(part->Append(data).ok());
  };
  // Digest computed while writing does not match the expected one.
  std::string id = Uuid::Random().ToString();
  write_part(id);
  absl::StatusOr<CommittedFile> done = writer_->CommitVerified(
      id, TestKey(), Sha256Of("other"), sha, data.size());
  EXPECT_EQ(done.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(writer_->PartPath(id)));
  // Size on disk differs from the expected size.
  id = Uuid::Random().ToString();
  write_part(id);
  done = writer_->CommitVerified(id, TestKey(), sha, sha, data.size() + 1);
  EXPECT_EQ(done.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(fs::exists(writer_->PartPath(id)));
  EXPECT_FALSE(fs::exists(writer_->FinalPath(TestKey())));
  // Both right.
  id = Uuid::Random().ToString();
  write_part(id);
  done = writer_->CommitVerified(id, TestKey(), sha, sha, data.size());
  ASSERT_TRUE(done.ok()) << done.status();
  EXPECT_EQ(ReadFile(writer_->FinalPath(TestKey())), data);
}

TEST_F(StoreWriterTest, CommitRejectsInvalidKey) {
  const std::string id = Uuid::Random().ToString();
  ASSERT_TRUE(writer_->OpenPart(id, std::nullopt, 0).ok());
  SidecarKey bad = TestKey();
  bad.variant = "../../escape";
  EXPECT_EQ(writer_->Commit(id, bad, Sha256Of("")).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(fs::exists(writer_->PartPath(id)));
}

TEST_F(StoreWriterTest, CleanupStrayAfterCrashKeepsActiveParts) {
  // A "crashed" process left parts of three jobs and some temp files.
  const std::string active = Uuid::Random().ToString();
  const std::string ended = Uuid::Random().ToString();
  const std::string unknown = Uuid::Random().ToString();
  for (const std::string& id : {active, ended, unknown}) {
    absl::StatusOr<PartFile> part = writer_->OpenPart(id, std::nullopt, 0);
    ASSERT_TRUE(part.ok());
    ASSERT_TRUE(part->Append("partial").ok());
  }
  WriteFile(root_ + "/.incoming/x.tmp", "tmp");
  WriteFile(root_ + "/.incoming/junk", "junk");
  fs::create_directory(root_ + "/.incoming/subdir");

  // Active ids may come in upper case; they name the same job.
  std::string upper = active;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  absl::StatusOr<uint64_t> removed = writer_->CleanupStray({upper});
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 4u);
  EXPECT_TRUE(fs::exists(writer_->PartPath(active)));
  EXPECT_FALSE(fs::exists(writer_->PartPath(ended)));
  EXPECT_FALSE(fs::exists(writer_->PartPath(unknown)));
  EXPECT_FALSE(fs::exists(root_ + "/.incoming/x.tmp"));
  EXPECT_FALSE(fs::exists(root_ + "/.incoming/junk"));
  EXPECT_TRUE(fs::exists(root_ + "/.incoming/subdir"));
  // The surviving part resumes.
  absl::StatusOr<PartFile> part = writer_->OpenPart(active, std::nullopt, 7);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(part->resumed_bytes(), 7u);
  // Nothing more to remove.
  removed = writer_->CleanupStray({active});
  ASSERT_TRUE(removed.ok());
  EXPECT_EQ(*removed, 0u);
}

TEST_F(StoreWriterTest, DiscardRemovesPart) {
  const std::string id = Uuid::Random().ToString();
  ASSERT_TRUE(writer_->OpenPart(id, std::nullopt, 0).ok());
  EXPECT_TRUE(fs::exists(writer_->PartPath(id)));
  EXPECT_TRUE(writer_->Discard(id).ok());
  EXPECT_FALSE(fs::exists(writer_->PartPath(id)));
  EXPECT_TRUE(writer_->Discard(id).ok());  // already gone: fine
}

// The batch lane's install: parts written whole, then one CommitBatch puts
// each at its layout path (new directories, existing ones, over an older
// file); a part of the wrong size, a missing part and a bad job id fail on
// their own, and nothing is left in .incoming.
TEST_F(StoreWriterTest, CommitBatchInstallsEachItemOnItsOwn) {
  auto key = [](const char* uuid, const char* variant) {
    return SidecarKey{*Uuid::Parse(uuid), v1::SIDECAR_KIND_THUMB, variant,
                      v1::SIDECAR_FORMAT_WEBP};
  };
  const SidecarKey fresh = key("11111111-2222-4333-8444-555555555555", "a");
  const SidecarKey sibling = key("11111111-2222-4333-8444-555555555555", "b");
  const SidecarKey older = key("66666666-7777-4888-9999-aaaaaaaaaaaa", "a");
  const SidecarKey short_part =
      key("bbbbbbbb-cccc-4ddd-8eee-ffffffffffff", "a");
  const SidecarKey no_part = key("12345678-1234-4234-8234-123456789abc", "a");
  fs::create_directories(fs::path(writer_->FinalPath(older)).parent_path());
  WriteFile(writer_->FinalPath(older), "an older version");

  const std::string ids[] = {"00000000-0000-4000-8000-000000000001",
                             "00000000-0000-4000-8000-000000000002",
                             "00000000-0000-4000-8000-000000000003",
                             "00000000-0000-4000-8000-000000000004",
                             "00000000-0000-4000-8000-000000000005"};
  const std::string data[] = {RandomBytes(45000, 1), RandomBytes(3, 2),
                              RandomBytes(1000, 3), RandomBytes(500, 4)};
  ASSERT_TRUE(writer_->WriteWholePart(ids[0], data[0]).ok());
  ASSERT_TRUE(writer_->WriteWholePart(ids[1], data[1]).ok());
  ASSERT_TRUE(writer_->WriteWholePart(ids[2], data[2]).ok());
  ASSERT_TRUE(writer_->WriteWholePart(ids[3], data[3]).ok());
  std::vector<StoreWriter::BatchItem> items = {
      {ids[0], fresh, data[0].size()}, {ids[1], sibling, data[1].size()},
      {ids[2], older, data[2].size()}, {ids[3], short_part, data[3].size() + 1},
      {ids[4], no_part, 10},           {"not-a-uuid", fresh, 1}};
  std::vector<absl::Status> r = writer_->CommitBatch(items);
  ASSERT_EQ(r.size(), items.size());
  EXPECT_TRUE(r[0].ok()) << r[0];
  EXPECT_TRUE(r[1].ok()) << r[1];
  EXPECT_TRUE(r[2].ok()) << r[2];
  EXPECT_EQ(r[3].code(), absl::StatusCode::kDataLoss) << r[3];
  EXPECT_EQ(r[4].code(), absl::StatusCode::kNotFound) << r[4];
  EXPECT_EQ(r[5].code(), absl::StatusCode::kInvalidArgument) << r[5];
  EXPECT_EQ(ReadFile(writer_->FinalPath(fresh)), data[0]);
  EXPECT_EQ(ReadFile(writer_->FinalPath(sibling)), data[1]);
  EXPECT_EQ(ReadFile(writer_->FinalPath(older)), data[2]);
  EXPECT_FALSE(fs::exists(writer_->FinalPath(short_part)));
  EXPECT_FALSE(fs::exists(writer_->FinalPath(no_part)));
  EXPECT_TRUE(fs::is_empty(root_ + "/.incoming"));
}

// Above kFsyncBatchMax items the batch is synced with two syncfs calls; the
// outcome is the same.
TEST_F(StoreWriterTest, CommitBatchOfManyItems) {
  std::vector<StoreWriter::BatchItem> items;
  std::vector<std::string> data;
  for (int i = 0; i < 40; ++i) {
    std::string id = absl::StrFormat("00000000-0000-4000-8000-%012d", i + 1);
    SidecarKey k{
        *Uuid::Parse(absl::StrFormat("%08d-0000-4000-8000-000000000000", i)),
        v1::SIDECAR_KIND_THUMB, "grid", v1::SIDECAR_FORMAT_WEBP};
    data.push_back(RandomBytes(100 + i, 100 + i));
    ASSERT_TRUE(writer_->WriteWholePart(id, data.back()).ok());
    items.push_back({id, k, data.back().size() + (i == 7 ? 1 : 0)});
  }
  ASSERT_GT(items.size(), StoreWriter::kFsyncBatchMax);
  std::vector<absl::Status> r = writer_->CommitBatch(items);
  for (size_t i = 0; i < items.size(); ++i) {
    if (i == 7) {
      EXPECT_EQ(r[i].code(), absl::StatusCode::kDataLoss) << r[i];
      EXPECT_FALSE(fs::exists(writer_->FinalPath(items[i].key)));
    } else {
      EXPECT_TRUE(r[i].ok()) << i << ": " << r[i];
      EXPECT_EQ(ReadFile(writer_->FinalPath(items[i].key)), data[i]) << i;
    }
  }
  EXPECT_TRUE(fs::is_empty(root_ + "/.incoming"));
}

TEST_F(StoreWriterTest, CheckSpace) {
  absl::StatusOr<uint64_t> free = writer_->FreeBytes();
  ASSERT_TRUE(free.ok()) << free.status();
  EXPECT_GT(*free, 0u);
  EXPECT_TRUE(writer_->CheckSpace(0, 0).ok());
  EXPECT_TRUE(writer_->CheckSpace(1024, 0).ok());

  absl::Status s = writer_->CheckSpace(1024, *free + (1 << 30));
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(s.message().find("would leave"), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find(root_), absl::string_view::npos) << s;
  EXPECT_NE(s.message().find("must stay free"), absl::string_view::npos) << s;

  s = writer_->CheckSpace(*free + (1ull << 40), 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_NE(s.message().find("needs more than"), absl::string_view::npos) << s;
  // No reserve was asked for, so the message names none.
  EXPECT_EQ(s.message().find("must stay free"), absl::string_view::npos) << s;
}

}  // namespace
}  // namespace sidecar::transfer
