// Fuzz target: the own-origin snapshot file a start reads from the state
// directory (services/availability/self_snapshot.h), which a full disk, a
// crash or a careless hand may have left in any state. The input is the
// file; its last four bytes are replaced by the CRC-32C of the rest, so
// that the fuzzer explores the parsing behind the checksum (unit tests
// cover the checksum itself). Read with fresh dictionaries, as a new
// process does, but small ones (256 variants, 64 versions): they are made
// for every input, and ids in the file may then lie past their capacity.
// Properties: errors are DATA_LOSS (or RESOURCE_EXHAUSTED from a full
// dictionary); an accepted snapshot has floor <= max seq, at most
// kMaxSnapshotEntries entries, strictly sorted by key, each with a seq in
// 1..max seq, a valid kind and format, and ids its dictionaries hand out.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "services/availability/self_snapshot.h"
#include "services/availability/string_dict.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using namespace sidecar;
using namespace sidecar::availability;

// A file in memory, rewritten for every input.
struct MemoryFile {
  int fd = ::memfd_create("self_snapshot", 0);
  std::string path = absl::StrCat("/proc/self/fd/", fd);

  void Set(const std::string& bytes) {
    FUZZ_CHECK(::ftruncate(fd, 0) == 0);
    FUZZ_CHECK(::pwrite(fd, bytes.data(), bytes.size(), 0) ==
               static_cast<ssize_t>(bytes.size()));
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static MemoryFile* file = new MemoryFile();
  FUZZ_CHECK(file->fd >= 0);
  std::string bytes(reinterpret_cast<const char*>(data), size);
  if (bytes.size() >= sizeof(uint32_t)) {
    const size_t body = bytes.size() - sizeof(uint32_t);
    const uint32_t crc = Crc32c(absl::string_view(bytes.data(), body));
    std::memcpy(bytes.data() + body, &crc, sizeof(crc));
  }
  file->Set(bytes);

  StringDict variants({256, 0, 0, "variant names", ""}, {});
  StringDict versions({64, 0, 0, "generator versions", ""}, {""});
  absl::StatusOr<SelfSnapshot> read =
      ReadSelfSnapshot(file->path, &variants, &versions);
  if (!read.ok()) {
    FUZZ_CHECK(read.status().code() == absl::StatusCode::kDataLoss ||
               read.status().code() == absl::StatusCode::kResourceExhausted);
    return 0;
  }
  const SelfSnapshotInfo& info = read->info;
  FUZZ_CHECK(info.floor_seq <= info.max_seq && info.max_seq <= kMaxSeq);
  FUZZ_CHECK(read->entries.size() <= kMaxSnapshotEntries);
  for (size_t i = 0; i < read->entries.size(); ++i) {
    const Entry& e = read->entries[i];
    if (i > 0) FUZZ_CHECK(KeyLess(read->entries[i - 1], e));
    FUZZ_CHECK(e.seq() >= 1 && e.seq() <= info.max_seq);
    FUZZ_CHECK(ValidateKindFormat(e.kind(), e.format()).ok());
    FUZZ_CHECK(e.variant() < variants.size());
    FUZZ_CHECK(e.version() < versions.size());
  }
  return 0;
}
