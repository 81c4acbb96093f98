#include "services/availability/self_snapshot.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/crc32c.h"
#include "common/sidecar_key.h"
#include "common/status_macros.h"
#include "common/unique_fd.h"
#include "services/availability/generator_version.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

constexpr char kMagic[8] = {'S', 'C', 'O', 'W', 'N', 'S', 'N', 'P'};
constexpr uint32_t kFormatVersion = 1;
// Names are short (variants and generator versions are bounded far below
// this); the bound keeps a corrupt count from asking for a huge buffer.
constexpr uint64_t kMaxNamesBytes = uint64_t{16} << 20;

struct FileHeader {
  char magic[8];
  uint32_t format_version;
  uint32_t header_bytes;
  uint8_t device_id[16];
  uint64_t generation;
  uint64_t max_seq;
  uint64_t floor_seq;
  uint64_t log_rows;
  uint64_t entry_count;
  uint32_t variant_names;
  uint32_t version_names;
  uint64_t names_bytes;
};
static_assert(sizeof(FileHeader) == 88, "the header is part of the format");

absl::string_view Bytes(const void* p, size_t n) {
  return {static_cast<const char*>(p), n};
}

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::ErrnoToStatus(errno, absl::StrCat(what, " ", path));
}

absl::Status WriteAll(int fd, const void* data, size_t n,
                      const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return Errno("cannot write", path);
    p += w;
    n -= static_cast<size_t>(w);
  }
  return absl::OkStatus();
}

absl::Status ReadAll(int fd, void* data, size_t n, const std::string& path) {
  char* p = static_cast<char*>(data);
  while (n > 0) {
    ssize_t r = ::read(fd, p, std::min<size_t>(n, size_t{1} << 30));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Errno("cannot read", path);
    if (r == 0) {
      return absl::DataLossError(absl::StrCat(path, " ended early"));
    }
    p += r;
    n -= static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

void AppendU16(std::string* out, uint16_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// The names of the ids marked in `used`, as the names section lists them.
// INVALID_ARGUMENT for an id `dict` never handed out.
absl::Status AppendNames(const std::vector<bool>& used, const StringDict& dict,
                         uint32_t* count, std::string* out) {
  const size_t known = dict.size();
  for (size_t id = 0; id < used.size(); ++id) {
    if (!used[id]) continue;
    if (id >= known) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry names id ", id, " unknown to the ",
                       dict.limits().what, " dictionary"));
    }
    absl::string_view name = dict.Name(static_cast<uint16_t>(id));
    AppendU16(out, static_cast<uint16_t>(id));
    AppendU16(out, static_cast<uint16_t>(name.size()));
    out->append(name.data(), name.size());
    ++*count;
  }
  return absl::OkStatus();
}

// Writes `header`, `names` and `entries` and their CRC to `fd`, fsynced.
absl::Status WriteFile(int fd, const FileHeader& header,
                       const std::string& names,
                       absl::Span<const Entry> entries,
                       const std::string& path) {
  const size_t entry_bytes = entries.size() * sizeof(Entry);
  uint32_t crc = Crc32c(Bytes(&header, sizeof(header)));
  crc = Crc32cExtend(crc, names);
  crc = Crc32cExtend(crc, Bytes(entries.data(), entry_bytes));
  SC_RETURN_IF_ERROR(WriteAll(fd, &header, sizeof(header), path));
  SC_RETURN_IF_ERROR(WriteAll(fd, names.data(), names.size(), path));
  SC_RETURN_IF_ERROR(WriteAll(fd, entries.data(), entry_bytes, path));
  SC_RETURN_IF_ERROR(WriteAll(fd, &crc, sizeof(crc), path));
  if (::fsync(fd) != 0) return Errno("cannot fsync", path);
  return absl::OkStatus();
}

// Makes a rename in `dir` durable.
absl::Status SyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Errno("cannot open", dir);
  if (::fsync(fd.get()) != 0) return Errno("cannot fsync", dir);
  return absl::OkStatus();
}

// The header of `path`, checked against the file's size `file_bytes` and
// the bounds, so that no count in it is used before it is known to fit.
absl::Status CheckHeader(const FileHeader& h, uint64_t file_bytes,
                         const StringDict& variants, const StringDict& versions,
                         const std::string& path) {
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(path, ": ", why));
  };
  if (std::memcmp(h.magic, kMagic, sizeof(kMagic)) != 0) {
    return bad("not an own-origin snapshot (wrong magic)");
  }
  if (h.format_version != kFormatVersion ||
      h.header_bytes != sizeof(FileHeader)) {
    return bad(absl::StrCat("format version ", h.format_version,
                            ", this build reads ", kFormatVersion));
  }
  if (h.entry_count > kMaxSnapshotEntries ||
      h.variant_names > variants.limits().capacity ||
      h.version_names > versions.limits().capacity ||
      h.names_bytes > kMaxNamesBytes) {
    return bad(absl::StrCat("absurd counts: ", h.entry_count, " entries, ",
                            h.variant_names, " + ", h.version_names,
                            " names in ", h.names_bytes, " bytes"));
  }
  const uint64_t want = sizeof(FileHeader) + h.names_bytes +
                        h.entry_count * sizeof(Entry) + sizeof(uint32_t);
  if (want != file_bytes) {
    return bad(absl::StrCat("is ", file_bytes, " bytes, its header implies ",
                            want, ": truncated or damaged"));
  }
  if (h.max_seq > kMaxSeq || h.floor_seq > h.max_seq) {
    return bad(absl::StrCat("floor ", h.floor_seq, " above max seq ", h.max_seq,
                            " or seq out of range"));
  }
  return absl::OkStatus();
}

// Maps ids of the writing process to ids of `dict`; -1: not in the file.
// Sized to the reading dictionary's capacity.
using IdMap = std::vector<int32_t>;

// The id `id` maps to, -1 if none (a reader's dictionary may be smaller
// than the id space of an entry's bits).
int32_t Mapped(const IdMap& map, uint16_t id) {
  return id < map.size() ? map[id] : -1;
}

// Parses the names section into `variant_ids` and `version_ids`, interning
// every name.
absl::Status ParseNames(absl::string_view names, const FileHeader& h,
                        StringDict* variants, StringDict* versions,
                        IdMap* variant_ids, IdMap* version_ids,
                        const std::string& path) {
  variant_ids->assign(variants->limits().capacity, -1);
  version_ids->assign(versions->limits().capacity, -1);
  const uint64_t total = uint64_t{h.variant_names} + h.version_names;
  for (uint64_t i = 0; i < total; ++i) {
    const bool is_variant = i < h.variant_names;
    uint16_t id, len;
    if (names.size() < 4) return absl::DataLossError(path + ": names cut");
    std::memcpy(&id, names.data(), 2);
    std::memcpy(&len, names.data() + 2, 2);
    names.remove_prefix(4);
    if (names.size() < len) return absl::DataLossError(path + ": names cut");
    absl::string_view name = names.substr(0, len);
    names.remove_prefix(len);
    IdMap& map = is_variant ? *variant_ids : *version_ids;
    absl::Status valid =
        is_variant ? ValidateVariant(name) : ValidateGeneratorVersion(name);
    if (id >= map.size() || map[id] >= 0 || !valid.ok()) {
      return absl::DataLossError(absl::StrCat(path, ": bad name entry for id ",
                                              id, " ", valid.message()));
    }
    absl::StatusOr<uint16_t> now =
        (is_variant ? variants : versions)->Intern(name);
    if (!now.ok()) return now.status();
    map[id] = *now;
  }
  if (!names.empty()) {
    return absl::DataLossError(path + ": trailing bytes after the names");
  }
  return absl::OkStatus();
}

bool IsIdentity(const IdMap& map) {
  for (size_t i = 0; i < map.size(); ++i) {
    if (map[i] >= 0 && static_cast<size_t>(map[i]) != i) return false;
  }
  return true;
}

// Checks every entry (names known, kind and format valid, 1 <= seq <=
// max_seq, strictly sorted in the file) and rewrites its ids to this
// process's, re-sorting if that changed the order.
absl::Status CheckAndRemap(Entries* entries, uint64_t max_seq,
                           const IdMap& variant_ids, const IdMap& version_ids,
                           const std::string& path) {
  // Which (kind, format) pairs are valid, for the 6 + 6 bits an entry has:
  // made once (a refusal is a Status with a message, 4,000 of them).
  static const std::array<bool, 64 * 64> kind_format = [] {
    std::array<bool, 64 * 64> valid{};
    for (int k = 0; k < 64; ++k) {
      for (int f = 0; f < 64; ++f)
        valid[k * 64 + f] = ValidateKindFormat(k, f).ok();
    }
    return valid;
  }();
  const bool remap = !IsIdentity(variant_ids) || !IsIdentity(version_ids);
  bool sorted = true;
  Entry prev_in_file{};  // the previous entry with the writer's ids
  for (size_t i = 0; i < entries->size(); ++i) {
    Entry& e = (*entries)[i];
    if (i > 0 && !KeyLess(prev_in_file, e)) {
      return absl::DataLossError(absl::StrCat(path, ": entries not sorted"));
    }
    prev_in_file = e;
    const int32_t variant = Mapped(variant_ids, e.variant());
    const int32_t version = Mapped(version_ids, e.version());
    if (variant < 0 || version < 0 || e.seq() == 0 || e.seq() > max_seq ||
        !kind_format[static_cast<int>(e.kind()) * 64 +
                     static_cast<int>(e.format())]) {
      return absl::DataLossError(absl::StrCat(path, ": bad entry ", i));
    }
    if (!remap) continue;
    e = Entry::Make(e.content, e.kind(), e.format(),
                    static_cast<uint16_t>(variant), e.size(), e.sha256, e.seq(),
                    e.removed(), static_cast<uint16_t>(version));
    if (i > 0 && !KeyLess((*entries)[i - 1], e)) sorted = false;
  }
  if (sorted) return absl::OkStatus();
  std::sort(entries->begin(), entries->end(),
            [](const Entry& a, const Entry& b) { return KeyLess(a, b); });
  for (size_t i = 1; i < entries->size(); ++i) {
    if (!KeyLess((*entries)[i - 1], (*entries)[i])) {
      return absl::DataLossError(absl::StrCat(path, ": a key comes twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSelfSnapshot(const std::string& path,
                               const SelfSnapshotInfo& info,
                               absl::Span<const Entry> entries,
                               const StringDict& variants,
                               const StringDict& versions) {
  if (entries.size() > kMaxSnapshotEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat(entries.size(), " entries: more than a snapshot holds (",
                     kMaxSnapshotEntries, ")"));
  }
  std::vector<bool> used_variants(variants.limits().capacity);
  std::vector<bool> used_versions(versions.limits().capacity);
  for (const Entry& e : entries) {
    if (e.seq() > info.max_seq) {
      return absl::InvalidArgumentError(
          absl::StrCat("entry seq ", e.seq(), " above max seq ", info.max_seq));
    }
    used_variants[e.variant()] = true;
    used_versions[e.version()] = true;
  }
  FileHeader h{};
  std::memcpy(h.magic, kMagic, sizeof(kMagic));
  h.format_version = kFormatVersion;
  h.header_bytes = sizeof(FileHeader);
  std::memcpy(h.device_id, info.device_id.bytes.data(), 16);
  h.generation = info.generation;
  h.max_seq = info.max_seq;
  h.floor_seq = info.floor_seq;
  h.log_rows = info.log_rows;
  h.entry_count = entries.size();
  std::string names;
  SC_RETURN_IF_ERROR(
      AppendNames(used_variants, variants, &h.variant_names, &names));
  SC_RETURN_IF_ERROR(
      AppendNames(used_versions, versions, &h.version_names, &names));
  h.names_bytes = names.size();

  const std::string tmp = path + ".tmp";
  UniqueFd fd(
      ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd.valid()) return Errno("cannot create", tmp);
  absl::Status s = WriteFile(fd.get(), h, names, entries, tmp);
  fd.reset();
  if (s.ok() && std::rename(tmp.c_str(), path.c_str()) != 0) {
    s = Errno(absl::StrCat("cannot rename ", tmp, " to"), path);
  }
  if (!s.ok()) {
    ::unlink(tmp.c_str());
    return s;
  }
  std::string dir = std::filesystem::path(path).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir);
}

absl::Status WriteSelfSnapshot(const std::string& path,
                               const SelfSnapshotInfo& info,
                               absl::Span<const Entry> entries) {
  return WriteSelfSnapshot(path, info, entries, VariantDict::Global(),
                           GeneratorVersionDict::Global());
}

absl::StatusOr<SelfSnapshot> ReadSelfSnapshot(const std::string& path,
                                              StringDict* variants,
                                              StringDict* versions) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return Errno("cannot open", path);
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Errno("cannot stat", path);
  const uint64_t file_bytes = static_cast<uint64_t>(st.st_size);
  if (file_bytes < sizeof(FileHeader) + sizeof(uint32_t)) {
    return absl::DataLossError(
        absl::StrCat(path, ": ", file_bytes, " bytes, shorter than a header"));
  }
  FileHeader h;
  SC_RETURN_IF_ERROR(ReadAll(fd.get(), &h, sizeof(h), path));
  SC_RETURN_IF_ERROR(CheckHeader(h, file_bytes, *variants, *versions, path));
  std::string names(h.names_bytes, '\0');
  SC_RETURN_IF_ERROR(ReadAll(fd.get(), names.data(), names.size(), path));
  SelfSnapshot out;
  ReserveEntries(&out.entries, h.entry_count);
  out.entries.resize(h.entry_count);
  const size_t entry_bytes = out.entries.size() * sizeof(Entry);
  SC_RETURN_IF_ERROR(ReadAll(fd.get(), out.entries.data(), entry_bytes, path));
  uint32_t stored_crc;
  SC_RETURN_IF_ERROR(ReadAll(fd.get(), &stored_crc, sizeof(stored_crc), path));
  uint32_t crc = Crc32c(Bytes(&h, sizeof(h)));
  crc = Crc32cExtend(crc, names);
  crc = Crc32cExtend(crc, Bytes(out.entries.data(), entry_bytes));
  if (crc != stored_crc) {
    return absl::DataLossError(absl::StrCat(path, ": checksum mismatch"));
  }
  IdMap variant_ids, version_ids;
  SC_RETURN_IF_ERROR(ParseNames(names, h, variants, versions, &variant_ids,
                                &version_ids, path));
  SC_RETURN_IF_ERROR(
      CheckAndRemap(&out.entries, h.max_seq, variant_ids, version_ids, path));
  std::memcpy(out.info.device_id.bytes.data(), h.device_id, 16);
  out.info.generation = h.generation;
  out.info.max_seq = h.max_seq;
  out.info.floor_seq = h.floor_seq;
  out.info.log_rows = h.log_rows;
  return out;
}

absl::StatusOr<SelfSnapshot> ReadSelfSnapshot(const std::string& path) {
  return ReadSelfSnapshot(path, &VariantDict::Global(),
                          &GeneratorVersionDict::Global());
}

}  // namespace sidecar::availability
