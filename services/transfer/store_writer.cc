#include "services/transfer/store_writer.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/bytes_format.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/uuid.h"

namespace sidecar::transfer {
namespace {

constexpr absl::string_view kPartSuffix = ".part";
constexpr size_t kReadBufferBytes = 1 << 20;

absl::Status ErrnoStatus(int err, absl::string_view what) {
  std::string msg = absl::StrCat(what, ": ", strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(msg);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(msg);
    default:
      return absl::InternalError(msg);
  }
}

// The canonical (lowercase) form of a job id; INVALID_ARGUMENT unless it is
// a UUID, which also keeps it a safe file name.
absl::StatusOr<std::string> CanonicalJobId(absl::string_view job_id) {
  absl::StatusOr<Uuid> u = Uuid::Parse(job_id);
  if (!u.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("job id \"", job_id, "\" is not a UUID"));
  }
  return u->ToString();
}

absl::Status FsyncDir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot open ", dir));
  UniqueFd closer(fd);
  if (::fsync(fd) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot sync directory ", dir));
  }
  return absl::OkStatus();
}

std::string Dirname(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// mkdir -p; every directory it creates is made durable by syncing its
// parent.
absl::Status MakeDirs(const std::string& dir) {
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return absl::OkStatus();
    return absl::FailedPreconditionError(
        absl::StrCat(dir, " exists and is not a directory"));
  }
  std::string parent = Dirname(dir);
  if (parent != dir) {
    SC_RETURN_IF_ERROR(MakeDirs(parent));
  }
  if (::mkdir(dir.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, absl::StrCat("cannot create directory ", dir));
  }
  return FsyncDir(parent);
}

// mkdir -p of `rel` (relative) under directory `dir_fd`, without syncs;
// tries the deepest directory first, since its parents usually exist.
absl::Status MakeDirsAt(int dir_fd, const std::string& rel) {
  if (::mkdirat(dir_fd, rel.c_str(), 0755) == 0 || errno == EEXIST) {
    return absl::OkStatus();
  }
  if (errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("cannot create directory ", rel));
  }
  size_t slash = rel.rfind('/');
  if (slash == std::string::npos || slash == 0) {
    return ErrnoStatus(ENOENT, absl::StrCat("cannot create directory ", rel));
  }
  SC_RETURN_IF_ERROR(MakeDirsAt(dir_fd, rel.substr(0, slash)));
  if (::mkdirat(dir_fd, rel.c_str(), 0755) != 0 && errno != EEXIST) {
    return ErrnoStatus(errno, absl::StrCat("cannot create directory ", rel));
  }
  return absl::OkStatus();
}

// pwrite of all of `data`, retrying short writes and EINTR.
absl::Status WriteAll(int fd, uint64_t offset, absl::string_view data,
                      const std::string& path) {
  while (!data.empty()) {
    ssize_t n =
        ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot write ", path));
    }
    data.remove_prefix(static_cast<size_t>(n));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

// Feeds bytes [0, length) of `fd` to `hash`. DATA_LOSS if the file is
// shorter.
absl::Status HashPrefix(int fd, uint64_t length, Sha256& hash,
                        const std::string& path) {
  std::vector<char> buf(std::min<uint64_t>(kReadBufferBytes, length));
  uint64_t offset = 0;
  while (offset < length) {
    size_t want =
        static_cast<size_t>(std::min<uint64_t>(buf.size(), length - offset));
    ssize_t n = ::pread(fd, buf.data(), want, static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot read ", path));
    }
    if (n == 0) {
      return absl::DataLossError(absl::StrCat(path, " ended at ", offset,
                                              " bytes, expected ", length));
    }
    hash.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
    offset += static_cast<uint64_t>(n);
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------- PartFile

PartFile::PartFile(UniqueFd fd, std::string path,
                   std::optional<uint64_t> expected_size, uint64_t size,
                   Sha256 prefix_hash)
    : fd_(std::move(fd)),
      path_(std::move(path)),
      expected_size_(expected_size),
      size_(size),
      resumed_bytes_(size),
      prefix_hash_(std::move(prefix_hash)) {}

PartFile::PartFile(PartFile&& other) noexcept
    : fd_(std::move(other.fd_)),
      path_(std::move(other.path_)),
      expected_size_(other.expected_size_),
      size_(other.size_.load()),
      resumed_bytes_(other.resumed_bytes_),
      prefix_hash_(std::move(other.prefix_hash_)) {}

PartFile& PartFile::operator=(PartFile&& other) noexcept {
  if (this != &other) {
    fd_ = std::move(other.fd_);
    path_ = std::move(other.path_);
    expected_size_ = other.expected_size_;
    size_ = other.size_.load();
    resumed_bytes_ = other.resumed_bytes_;
    prefix_hash_ = std::move(other.prefix_hash_);
  }
  return *this;
}

PartFile::~PartFile() = default;

absl::Status PartFile::Append(absl::string_view data) {
  return WriteAt(size_.load(), data);
}

absl::Status PartFile::WriteAt(uint64_t offset, absl::string_view data) {
  if (!fd_.valid()) return absl::FailedPreconditionError("part file is closed");
  const uint64_t end = offset + data.size();
  if (end < offset || (expected_size_.has_value() && end > *expected_size_)) {
    return absl::OutOfRangeError(absl::StrCat(
        "write of ", data.size(), " bytes at ", offset, " passes the end (",
        expected_size_.value_or(0), " bytes) of ", path_));
  }
  SC_RETURN_IF_ERROR(WriteAll(fd_.get(), offset, data, path_));
  // Concurrent writers of other ranges: the furthest end wins.
  uint64_t seen = size_.load();
  while (seen < end && !size_.compare_exchange_weak(seen, end)) {
  }
  return absl::OkStatus();
}

absl::Status PartFile::Sync() {
  if (!fd_.valid()) return absl::FailedPreconditionError("part file is closed");
  if (::fdatasync(fd_.get()) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot sync ", path_));
  }
  return absl::OkStatus();
}

// ------------------------------------------------------------- StoreWriter

StoreWriter::StoreWriter(std::string root)
    : root_(std::move(root)),
      incoming_(absl::StrCat(root_, "/", kIncomingDir)) {}

absl::StatusOr<std::unique_ptr<StoreWriter>> StoreWriter::Open(
    const std::string& root) {
  if (root.empty()) {
    return absl::InvalidArgumentError("the sidecar root must not be empty");
  }
  std::string trimmed = root;
  while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
  std::unique_ptr<StoreWriter> writer(new StoreWriter(std::move(trimmed)));
  SC_RETURN_IF_ERROR(MakeDirs(writer->incoming_));
  return writer;
}

std::string StoreWriter::PartPath(absl::string_view job_id) const {
  return absl::StrCat(incoming_, "/", job_id, kPartSuffix);
}

std::string StoreWriter::FinalPath(const SidecarKey& key) const {
  return absl::StrCat(root_, "/", RelativePath(key));
}

absl::StatusOr<PartFile> StoreWriter::OpenPart(
    absl::string_view job_id, std::optional<uint64_t> expected_size,
    uint64_t resume_from) const {
  absl::StatusOr<std::string> id = CanonicalJobId(job_id);
  if (!id.ok()) return id.status();
  const std::string path = PartPath(*id);
  if (expected_size.has_value()) {
    resume_from = std::min(resume_from, *expected_size);
  }
  UniqueFd fd;
  uint64_t keep = 0;
  Sha256 hash;
  if (resume_from > 0) {
    fd.reset(::open(path.c_str(), O_RDWR | O_CLOEXEC));
    if (!fd.valid() && errno != ENOENT) {
      return ErrnoStatus(errno, absl::StrCat("cannot open ", path));
    }
    if (fd.valid()) {
      struct stat st;
      if (::fstat(fd.get(), &st) != 0) {
        return ErrnoStatus(errno, absl::StrCat("cannot stat ", path));
      }
      keep = std::min(resume_from, static_cast<uint64_t>(st.st_size));
      absl::Status s;
      if (::ftruncate(fd.get(), static_cast<off_t>(keep)) != 0) {
        s = ErrnoStatus(errno, absl::StrCat("cannot truncate ", path));
      }
      if (s.ok()) s = HashPrefix(fd.get(), keep, hash, path);
      if (!s.ok()) return s;
    }
  }
  if (!fd.valid()) {
    fd.reset(
        ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd.valid()) {
      return ErrnoStatus(errno, absl::StrCat("cannot create ", path));
    }
  }
  if (expected_size.has_value() && *expected_size > keep) {
    // Reserve the space now (a full disk fails here, not midway), without
    // changing the size. Filesystems without fallocate just skip it.
    int err =
        ::fallocate(fd.get(), FALLOC_FL_KEEP_SIZE, static_cast<off_t>(keep),
                    static_cast<off_t>(*expected_size - keep));
    if (err != 0 && errno != EOPNOTSUPP && errno != ENOSYS) {
      return ErrnoStatus(
          errno, absl::StrCat("cannot reserve ", HumanBytes(*expected_size),
                              " for ", path));
    }
  }
  return PartFile(std::move(fd), path, expected_size, keep, std::move(hash));
}

absl::StatusOr<CommittedFile> StoreWriter::Commit(
    absl::string_view job_id, const SidecarKey& key,
    const Sha256Digest& expected_sha256) const {
  return CommitImpl(job_id, key, std::nullopt, expected_sha256, std::nullopt);
}

absl::StatusOr<CommittedFile> StoreWriter::CommitVerified(
    absl::string_view job_id, const SidecarKey& key,
    const Sha256Digest& computed_sha256, const Sha256Digest& expected_sha256,
    uint64_t expected_size) const {
  return CommitImpl(job_id, key, computed_sha256, expected_sha256,
                    expected_size);
}

absl::StatusOr<CommittedFile> StoreWriter::CommitImpl(
    absl::string_view job_id, const SidecarKey& key,
    const std::optional<Sha256Digest>& computed_sha256,
    const Sha256Digest& expected_sha256,
    std::optional<uint64_t> expected_size) const {
  absl::StatusOr<std::string> id = CanonicalJobId(job_id);
  if (!id.ok()) return id.status();
  SC_RETURN_IF_ERROR(ValidateKey(key));
  const std::string part = PartPath(*id);
  const std::string what =
      absl::StrCat(KeyDebugString(key), " (job ", *id, ")");

  CommittedFile out;
  {
    int fd = ::open(part.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      return ErrnoStatus(errno,
                         absl::StrCat("no part file to commit for ", what));
    }
    UniqueFd closer(fd);
    // Durable before it becomes visible under its final name.
    if (::fsync(fd) != 0) {
      return ErrnoStatus(errno, absl::StrCat("cannot sync ", part));
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      return ErrnoStatus(errno, absl::StrCat("cannot stat ", part));
    }
    out.size = static_cast<uint64_t>(st.st_size);
    absl::Status bad;
    if (expected_size.has_value() && out.size != *expected_size) {
      bad = absl::DataLossError(
          absl::StrCat(what, ": received ", out.size, " bytes, expected ",
                       *expected_size, "; the partial file was deleted"));
    } else {
      if (computed_sha256.has_value()) {
        out.sha256 = *computed_sha256;
      } else {
        Sha256 hash;
        SC_RETURN_IF_ERROR(HashPrefix(fd, out.size, hash, part));
        out.sha256 = hash.Finish();
      }
      if (out.sha256 != expected_sha256) {
        bad = absl::DataLossError(absl::StrCat(
            what, ": received bytes have SHA-256 ", DigestToHex(out.sha256),
            ", expected ", DigestToHex(expected_sha256),
            "; the partial file was deleted"));
      }
    }
    if (!bad.ok()) {
      if (::unlink(part.c_str()) != 0 && errno != ENOENT) {
        SC_LOG(WARNING) << "cannot delete " << part << ": " << strerror(errno);
      }
      return bad;
    }
  }

  out.path = FinalPath(key);
  const std::string dir = Dirname(out.path);
  SC_RETURN_IF_ERROR(MakeDirs(dir));
  if (::rename(part.c_str(), out.path.c_str()) != 0) {
    return ErrnoStatus(errno,
                       absl::StrCat("cannot move ", part, " to ", out.path));
  }
  SC_RETURN_IF_ERROR(FsyncDir(dir));
  if (absl::Status s = FsyncDir(incoming_); !s.ok()) {
    // The file is in place and durable; a stale directory entry of the part
    // is only something for CleanupStray.
    SC_LOG(WARNING) << s.message();
  }
  return out;
}

absl::Status StoreWriter::WriteWholePart(absl::string_view job_id,
                                         absl::string_view data) const {
  absl::StatusOr<std::string> id = CanonicalJobId(job_id);
  if (!id.ok()) return id.status();
  const std::string part = PartPath(*id);
  int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return ErrnoStatus(errno, absl::StrCat("cannot create ", part));
  UniqueFd closer(fd);
  return WriteAll(fd, 0, data, part);
}

namespace {

// The part file name of batch item `it` in `incoming_fd`, after checking
// that it exists with the item's size (a part of another size is deleted:
// DATA_LOSS); with `sync`, its data is also made durable.
absl::StatusOr<std::string> CheckedPart(int incoming_fd,
                                        const StoreWriter::BatchItem& it,
                                        bool sync) {
  absl::StatusOr<std::string> id = CanonicalJobId(it.job_id);
  if (!id.ok()) return id.status();
  std::string part = absl::StrCat(*id, kPartSuffix);
  struct stat st;
  // Opened only to be synced; else one fstatat is enough.
  const int fd = sync ? ::openat(incoming_fd, part.c_str(),
                                 O_RDONLY | O_CLOEXEC | O_NOFOLLOW)
                      : -1;
  UniqueFd closer(fd);
  if (sync ? fd < 0 || ::fstat(fd, &st) != 0
           : ::fstatat(incoming_fd, part.c_str(), &st, AT_SYMLINK_NOFOLLOW) !=
                 0) {
    return ErrnoStatus(errno, absl::StrCat("no part file for job ", *id));
  }
  if (static_cast<uint64_t>(st.st_size) != it.size) {
    ::unlinkat(incoming_fd, part.c_str(), 0);
    return absl::DataLossError(
        absl::StrCat(KeyDebugString(it.key), ": part has ", st.st_size,
                     " bytes, expected ", it.size, "; deleted"));
  }
  if (sync && ::fdatasync(fd) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot sync the part of ", *id));
  }
  return part;
}

}  // namespace

std::vector<absl::Status> StoreWriter::CommitFewSynced(
    absl::Span<const BatchItem> items, int root_fd, int incoming_fd) const {
  std::vector<absl::Status> out(items.size());
  bool moved_any = false;
  for (size_t i = 0; i < items.size(); ++i) {
    const BatchItem& it = items[i];
    // Durable before it becomes visible under its final name.
    absl::StatusOr<std::string> part =
        CheckedPart(incoming_fd, it, /*sync=*/true);
    if (!part.ok()) {
      out[i] = part.status();
      continue;
    }
    const std::string final_path = FinalPath(it.key);
    const std::string dir = Dirname(final_path);
    if (absl::Status s = MakeDirs(dir); !s.ok()) {  // syncs new directories
      out[i] = s;
      continue;
    }
    if (::renameat(incoming_fd, part->c_str(), root_fd,
                   RelativePath(it.key).c_str()) != 0) {
      out[i] = ErrnoStatus(
          errno, absl::StrCat("cannot move ", *part, " to ", final_path));
      continue;
    }
    moved_any = true;
    if (absl::Status s = FsyncDir(dir); !s.ok()) out[i] = s;
  }
  if (moved_any) {
    if (absl::Status s = FsyncDir(incoming_); !s.ok()) {
      // The files are in place and durable; a stale entry of a part is only
      // something for CleanupStray.
      SC_LOG(WARNING) << s.message();
    }
  }
  return out;
}

std::vector<absl::Status> StoreWriter::CommitBatch(
    absl::Span<const BatchItem> items) const {
  std::vector<absl::Status> out(items.size());
  int root_fd = ::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (root_fd < 0) {
    absl::Status s = ErrnoStatus(errno, absl::StrCat("cannot open ", root_));
    for (auto& o : out) o = s;
    return out;
  }
  UniqueFd closer(root_fd);
  int incoming_fd =
      ::open(incoming_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (incoming_fd < 0) {
    absl::Status s =
        ErrnoStatus(errno, absl::StrCat("cannot open ", incoming_));
    for (auto& o : out) o = s;
    return out;
  }
  UniqueFd incoming_closer(incoming_fd);
  if (items.size() <= kFsyncBatchMax)
    return CommitFewSynced(items, root_fd, incoming_fd);
  // 1. Every part's data on disk before any name points at it.
  if (::syncfs(root_fd) != 0) {
    absl::Status s = ErrnoStatus(errno, absl::StrCat("cannot sync ", root_));
    for (auto& o : out) o = s;
    return out;
  }
  // 2. Names. Paths relative to the two directories: short lookups.
  for (size_t i = 0; i < items.size(); ++i) {
    const BatchItem& it = items[i];
    absl::StatusOr<std::string> part =
        CheckedPart(incoming_fd, it, /*sync=*/false);
    if (!part.ok()) {
      out[i] = part.status();
      continue;
    }
    const std::string rel = RelativePath(it.key);
    int rc = ::renameat(incoming_fd, part->c_str(), root_fd, rel.c_str());
    if (rc != 0 && errno == ENOENT) {
      // Its directories are new. Created without per-directory syncs: the
      // second syncfs covers them.
      if (absl::Status s = MakeDirsAt(root_fd, Dirname(rel)); !s.ok()) {
        out[i] = s;
        continue;
      }
      rc = ::renameat(incoming_fd, part->c_str(), root_fd, rel.c_str());
    }
    if (rc != 0) {
      out[i] = ErrnoStatus(errno, absl::StrCat("cannot move ", *part, " to ",
                                               FinalPath(it.key)));
    }
  }
  // 3. The names (and new directories) on disk.
  if (::syncfs(root_fd) != 0) {
    absl::Status s = ErrnoStatus(errno, absl::StrCat("cannot sync ", root_));
    for (auto& o : out)
      if (o.ok()) o = s;
  }
  return out;
}

absl::Status StoreWriter::Discard(absl::string_view job_id) const {
  absl::StatusOr<std::string> id = CanonicalJobId(job_id);
  if (!id.ok()) return id.status();
  const std::string part = PartPath(*id);
  if (::unlink(part.c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("cannot delete ", part));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> StoreWriter::CleanupStray(
    const absl::flat_hash_set<std::string>& active_job_ids) const {
  absl::flat_hash_set<std::string> keep;
  for (const std::string& id : active_job_ids) {
    absl::StatusOr<std::string> canonical = CanonicalJobId(id);
    if (canonical.ok()) keep.insert(absl::StrCat(*canonical, kPartSuffix));
  }
  DIR* dir = ::opendir(incoming_.c_str());
  if (dir == nullptr) {
    return ErrnoStatus(errno, absl::StrCat("cannot list ", incoming_));
  }
  std::vector<std::string> stray;
  errno = 0;
  while (struct dirent* e = ::readdir(dir)) {
    absl::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    if (keep.contains(name)) continue;
    stray.emplace_back(name);
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0)
    return ErrnoStatus(err, absl::StrCat("cannot list ", incoming_));

  uint64_t removed = 0;
  for (const std::string& name : stray) {
    const std::string path = absl::StrCat(incoming_, "/", name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) continue;  // gone meanwhile
    if (S_ISDIR(st.st_mode)) {
      SC_LOG(WARNING) << "leaving unexpected directory " << path;
      continue;
    }
    if (::unlink(path.c_str()) != 0) {
      if (errno == ENOENT) continue;
      return ErrnoStatus(errno, absl::StrCat("cannot delete ", path));
    }
    SC_LOG(INFO) << "deleted stray " << path << " (" << HumanBytes(st.st_size)
                 << ")";
    ++removed;
  }
  return removed;
}

absl::StatusOr<uint64_t> StoreWriter::FreeBytes() const {
  struct statvfs vfs;
  if (::statvfs(root_.c_str(), &vfs) != 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot statvfs ", root_));
  }
  return static_cast<uint64_t>(vfs.f_bavail) *
         static_cast<uint64_t>(vfs.f_frsize);
}

absl::Status StoreWriter::CheckSpace(uint64_t size,
                                     uint64_t min_free_bytes) const {
  absl::StatusOr<uint64_t> free = FreeBytes();
  if (!free.ok()) return free.status();
  if (size > *free) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "fetching ", HumanBytes(size), " needs more than the ",
        HumanBytes(*free), " free on ", root_,
        min_free_bytes > 0
            ? absl::StrCat("; at least ", HumanBytes(min_free_bytes),
                           " must stay free")
            : ""));
  }
  if (*free - size < min_free_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "fetching ", HumanBytes(size), " would leave ",
        HumanBytes(*free - size), " free on ", root_, "; at least ",
        HumanBytes(min_free_bytes), " must stay free"));
  }
  return absl::OkStatus();
}

}  // namespace sidecar::transfer
