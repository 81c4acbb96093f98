#include "services/availability/self_snapshot.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "services/availability/generator_version.h"
#include "services/availability/origin_table.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

Uuid U(int n) {
  Uuid u;
  u.bytes[15] = static_cast<uint8_t>(n);
  u.bytes[0] = static_cast<uint8_t>(n >> 8);
  return u;
}

class SelfSnapshotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           absl::StrCat(
               "self_snapshot_test_", getpid(), "_",
               ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    path_ = (dir_ / kSelfSnapshotFile).string();
    info_.device_id = U(4242);
    info_.generation = 17;
    info_.max_seq = 1000;
    info_.floor_seq = 5;
    info_.log_rows = 1234;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Entries over contents 0..n-1 using two variants and two generator
  // versions of `variants` / `versions` (interned there), sorted.
  Entries Make(int n, StringDict* variants, StringDict* versions) {
    uint16_t v[2] = {variants->Intern("aa-snap").value(),
                     variants->Intern("zz-snap").value()};
    uint16_t g[2] = {versions->Intern("gen-1").value(),
                     versions->Intern("gen-2").value()};
    Entries out;
    for (int i = 0; i < n; ++i) {
      for (int j = 0; j < 2; ++j) {
        const bool removed = (i + j) % 7 == 0;
        out.push_back(Entry::Make(
            U(i), v1::SIDECAR_KIND_THUMB, v1::SIDECAR_FORMAT_WEBP, v[j],
            removed ? 0 : 100 + i,
            removed ? Sha256Digest{} : Sha256Of(absl::StrCat(i, "/", j)),
            1 + (i * 2 + j) % 999, removed, removed ? 0 : g[(i + j) % 2]));
      }
    }
    OriginTable::SortAndDedupe(&out);
    return out;
  }

  std::string ReadBytes() {
    std::ifstream in(path_, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  void WriteBytes(const std::string& bytes) {
    std::ofstream(path_, std::ios::binary | std::ios::trunc) << bytes;
  }

  std::filesystem::path dir_;
  std::string path_;
  SelfSnapshotInfo info_;
};

TEST_F(SelfSnapshotTest, RoundTrip) {
  Entries entries =
      Make(300, &VariantDict::Global(), &GeneratorVersionDict::Global());
  ASSERT_TRUE(WriteSelfSnapshot(path_, info_, entries).ok());
  EXPECT_FALSE(std::filesystem::exists(path_ + ".tmp"));
  absl::StatusOr<SelfSnapshot> read = ReadSelfSnapshot(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->info.device_id, info_.device_id);
  EXPECT_EQ(read->info.generation, 17u);
  EXPECT_EQ(read->info.max_seq, 1000u);
  EXPECT_EQ(read->info.floor_seq, 5u);
  EXPECT_EQ(read->info.log_rows, 1234u);
  ASSERT_EQ(read->entries.size(), entries.size());
  EXPECT_EQ(std::memcmp(read->entries.data(), entries.data(),
                        entries.size() * sizeof(Entry)),
            0);
}

TEST_F(SelfSnapshotTest, EmptyRoundTripAndReplace) {
  ASSERT_TRUE(WriteSelfSnapshot(path_, info_, {}).ok());
  absl::StatusOr<SelfSnapshot> read = ReadSelfSnapshot(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(read->entries.empty());
  // A second write replaces the first whole.
  Entries entries =
      Make(10, &VariantDict::Global(), &GeneratorVersionDict::Global());
  ASSERT_TRUE(WriteSelfSnapshot(path_, info_, entries).ok());
  read = ReadSelfSnapshot(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->entries.size(), entries.size());
}

TEST_F(SelfSnapshotTest, MissingFileIsNotFound) {
  EXPECT_EQ(ReadSelfSnapshot(path_).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(SelfSnapshotTest, RefusesToWriteSeqsAboveMaxSeq) {
  Entries entries =
      Make(3, &VariantDict::Global(), &GeneratorVersionDict::Global());
  info_.max_seq = 2;
  EXPECT_EQ(WriteSelfSnapshot(path_, info_, entries).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(SelfSnapshotTest, TruncatedFileIsDataLoss) {
  Entries entries =
      Make(50, &VariantDict::Global(), &GeneratorVersionDict::Global());
  ASSERT_TRUE(WriteSelfSnapshot(path_, info_, entries).ok());
  const std::string bytes = ReadBytes();
  for (size_t keep : {size_t{0}, size_t{10}, size_t{88}, size_t{200},
                      bytes.size() / 2, bytes.size() - 4, bytes.size() - 1}) {
    WriteBytes(bytes.substr(0, keep));
    absl::StatusOr<SelfSnapshot> read = ReadSelfSnapshot(path_);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss)
        << keep << " bytes: " << read.status();
  }
  WriteBytes(bytes + "x");  // trailing garbage
  EXPECT_EQ(ReadSelfSnapshot(path_).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST_F(SelfSnapshotTest, AnyFlippedByteIsDataLoss) {
  Entries entries =
      Make(20, &VariantDict::Global(), &GeneratorVersionDict::Global());
  ASSERT_TRUE(WriteSelfSnapshot(path_, info_, entries).ok());
  const std::string bytes = ReadBytes();
  // Every byte of the header and the names, then a sample of the rest.
  for (size_t i = 0; i < bytes.size(); i += (i < 200 ? 1 : 61)) {
    std::string bad = bytes;
    bad[i] ^= 0x20;
    WriteBytes(bad);
    absl::StatusOr<SelfSnapshot> read = ReadSelfSnapshot(path_);
    EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss)
        << "byte " << i << ": " << read.status();
  }
}

TEST_F(SelfSnapshotTest, WrongMagicVersionAndAbsurdCountsAreDataLoss) {
  ASSERT_TRUE(WriteSelfSnapshot(path_, info_, {}).ok());
  const std::string bytes = ReadBytes();
  std::string bad = bytes;
  bad[0] = 'X';
  WriteBytes(bad);
  absl::StatusOr<SelfSnapshot> read = ReadSelfSnapshot(path_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("magic"), std::string::npos)
      << read.status();

  bad = bytes;
  bad[8] = 2;  // format version 2
  WriteBytes(bad);
  read = ReadSelfSnapshot(path_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("format version"), std::string::npos)
      << read.status();

  // An entry count of 2^60: refused before anything is allocated.
  bad = bytes;
  const uint64_t huge = uint64_t{1} << 60;
  std::memcpy(bad.data() + 64, &huge, sizeof(huge));
  WriteBytes(bad);
  read = ReadSelfSnapshot(path_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("absurd"), std::string::npos)
      << read.status();

  // A plausible count the file is too short for.
  bad = bytes;
  const uint64_t some = 1000;
  std::memcpy(bad.data() + 64, &some, sizeof(some));
  WriteBytes(bad);
  read = ReadSelfSnapshot(path_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(read.status().message().find("truncated"), std::string::npos)
      << read.status();

  WriteBytes(std::string(100000, '\0'));  // not a snapshot at all
  EXPECT_EQ(ReadSelfSnapshot(path_).status().code(),
            absl::StatusCode::kDataLoss);
}

// A file whose checksum is right but whose entry names a variant id its
// names section does not (crafted, not damaged) is refused.
TEST_F(SelfSnapshotTest, EntryIdsItsNamesDoNotListAreDataLoss) {
  Entries entries =
      Make(3, &VariantDict::Global(), &GeneratorVersionDict::Global());
  ASSERT_TRUE(WriteSelfSnapshot(path_, info_, entries).ok());
  std::string bytes = ReadBytes();
  const size_t first_entry =
      bytes.size() - sizeof(uint32_t) - entries.size() * sizeof(Entry);
  Entry e;
  std::memcpy(&e, bytes.data() + first_entry, sizeof(e));
  e.seq_bits |= uint64_t{0xffff} << 48;  // variant id 65535
  std::memcpy(bytes.data() + first_entry, &e, sizeof(e));
  const uint32_t crc =
      Crc32c(absl::string_view(bytes.data(), bytes.size() - sizeof(crc)));
  std::memcpy(bytes.data() + bytes.size() - sizeof(crc), &crc, sizeof(crc));
  WriteBytes(bytes);
  absl::StatusOr<SelfSnapshot> read = ReadSelfSnapshot(path_);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
  EXPECT_NE(read.status().message().find("bad entry 0"), std::string::npos)
      << read.status();
}

// The writing process and the reading one interned names in different
// orders: the entries must come back with the reader's ids, re-sorted.
TEST_F(SelfSnapshotTest, DictionaryIdsAreRemapped) {
  VariantDict write_variants, read_variants;
  GeneratorVersionDict write_versions, read_versions;
  Entries written = Make(100, &write_variants, &write_versions);
  ASSERT_TRUE(
      WriteSelfSnapshot(path_, info_, written, write_variants, write_versions)
          .ok());
  // The reader knows the names in the other order, behind others.
  ASSERT_TRUE(read_variants.Intern("other-variant").ok());
  ASSERT_TRUE(read_variants.Intern("zz-snap").ok());
  ASSERT_TRUE(read_variants.Intern("aa-snap").ok());
  ASSERT_TRUE(read_versions.Intern("other-version").ok());
  ASSERT_TRUE(read_versions.Intern("gen-2").ok());
  ASSERT_TRUE(read_versions.Intern("gen-1").ok());
  ASSERT_NE(write_variants.Find("aa-snap"), read_variants.Find("aa-snap"));
  absl::StatusOr<SelfSnapshot> read =
      ReadSelfSnapshot(path_, &read_variants, &read_versions);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->entries.size(), written.size());
  for (size_t i = 1; i < read->entries.size(); ++i) {
    ASSERT_TRUE(KeyLess(read->entries[i - 1], read->entries[i])) << i;
  }
  // Same entries by name: look each written one up under the reader's ids.
  EntrySet set(read->entries);
  for (const Entry& w : written) {
    const uint16_t variant =
        *read_variants.Find(write_variants.Name(w.variant()));
    const uint16_t version =
        *read_versions.Find(write_versions.Name(w.version()));
    EntryKey key = EntryKey::Of(w);
    key.variant = variant;
    const Entry* r = set.Find(key);
    ASSERT_NE(r, nullptr);
    EXPECT_EQ(r->seq(), w.seq());
    EXPECT_EQ(r->size(), w.size());
    EXPECT_EQ(r->sha256, w.sha256);
    EXPECT_EQ(r->removed(), w.removed());
    EXPECT_EQ(r->version(), version);
  }
}

}  // namespace
}  // namespace sidecar::availability
