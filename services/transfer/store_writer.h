// StoreWriter: safe writes of fetched sidecars into this device's sidecar
// store (the `content/` layout under a root).
//
// Bytes arrive in a part file, root/.incoming/{job_id}.part, inside the store
// so that the final rename(2) is on the same filesystem and atomic. A part is
// committed only after its whole content has been verified against the
// expected SHA-256; the final path never holds a partial or unverified file.
//
//   SC_ASSIGN_OR_RETURN(auto writer, StoreWriter::Open("/home/me/.sidecars"));
//   SC_ASSIGN_OR_RETURN(PartFile part, writer->OpenPart(job.id, size, 0));
//   Sha256 hash = part.TakePrefixHash();
//   ... part.Append(chunk); hash.Update(chunk); ...
//   SC_ASSIGN_OR_RETURN(auto done, writer->CommitVerified(job.id, job.key,
//                                                        hash.Finish(), sha,
//                                                        size));
//
// Thread-safe as long as each job id is used by one thread at a time.
#ifndef SIDECAR_SERVICES_TRANSFER_STORE_WRITER_H_
#define SIDECAR_SERVICES_TRANSFER_STORE_WRITER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/unique_fd.h"

namespace sidecar::transfer {

// Directory of part files, relative to the sidecar root.
inline constexpr absl::string_view kIncomingDir = ".incoming";

// An open part file. Movable, not copyable; closes on destruction (without
// syncing: call Sync() for durability). WriteAt, Size and Sync may be called
// from several threads at once (a multi-source fetch writes its pieces
// concurrently); moving and the other methods may not race with anything.
class PartFile {
 public:
  PartFile(PartFile&& other) noexcept;
  PartFile& operator=(PartFile&& other) noexcept;
  PartFile(const PartFile&) = delete;
  PartFile& operator=(const PartFile&) = delete;
  ~PartFile();

  // Writes `data` at the current end (Size()). Errors as WriteAt.
  absl::Status Append(absl::string_view data);
  // Writes `data` at `offset` (pwrite), e.g. ranges from several sources in
  // any order; a gap reads as zeros until written. OUT_OF_RANGE if the
  // expected size is known and the write would pass it; RESOURCE_EXHAUSTED
  // if the disk is full; INTERNAL on other I/O errors.
  absl::Status WriteAt(uint64_t offset, absl::string_view data);
  // Bytes in the file: the end of the furthest write (or of the kept prefix).
  uint64_t Size() const { return size_.load(); }
  // Makes the written data durable (fdatasync).
  absl::Status Sync();

  // Bytes kept from an earlier part by OpenPart (0 if it started afresh).
  uint64_t resumed_bytes() const { return resumed_bytes_; }
  // The SHA-256 state over the kept prefix, re-computed from the disk, for
  // the caller to continue hashing with the bytes it appends. Call once.
  Sha256 TakePrefixHash() { return std::move(prefix_hash_); }
  const std::string& path() const { return path_; }

 private:
  friend class StoreWriter;
  PartFile(UniqueFd fd, std::string path, std::optional<uint64_t> expected_size,
           uint64_t size, Sha256 prefix_hash);

  UniqueFd fd_;
  std::string path_;
  std::optional<uint64_t> expected_size_;
  std::atomic<uint64_t> size_{0};
  uint64_t resumed_bytes_ = 0;
  Sha256 prefix_hash_;
};

// What Commit put in place.
struct CommittedFile {
  std::string path;  // absolute (root + RelativePath(key))
  uint64_t size = 0;
  Sha256Digest sha256{};
};

class StoreWriter {
 public:
  // A writer for the store under `root`, creating root and root/.incoming
  // if missing. INVALID_ARGUMENT if `root` is empty; INTERNAL if the
  // directories cannot be made.
  static absl::StatusOr<std::unique_ptr<StoreWriter>> Open(
      const std::string& root);

  // Opens the part file of job `job_id` (a UUID, else INVALID_ARGUMENT). If
  // a part exists and `resume_from` > 0, keeps its first
  // min(resume_from, its size) bytes, drops the rest, and re-computes their
  // SHA-256 from the disk (see PartFile::TakePrefixHash); otherwise creates
  // or empties it. `expected_size` (if known) bounds the writes and is
  // reserved on disk up front, so a full disk shows early.
  absl::StatusOr<PartFile> OpenPart(absl::string_view job_id,
                                    std::optional<uint64_t> expected_size,
                                    uint64_t resume_from) const;

  // Verifies and installs the part of `job_id` as the sidecar `key`: syncs
  // the part, re-reads it and checks its SHA-256 against `expected_sha256`,
  // creates the directories of root/RelativePath(key), renames the part
  // there (replacing any older file) and syncs the directory. On mismatch:
  // deletes the part and returns DATA_LOSS with both hashes. NOT_FOUND if
  // there is no part; INVALID_ARGUMENT for a bad id or key. The caller must
  // not write to the part meanwhile.
  absl::StatusOr<CommittedFile> Commit(
      absl::string_view job_id, const SidecarKey& key,
      const Sha256Digest& expected_sha256) const;

  // As Commit, but trusts `computed_sha256`, the digest the caller computed
  // over the bytes while writing them, instead of re-reading the file. Still
  // checks that `computed_sha256` equals `expected_sha256` and the part's
  // size equals `expected_size`; on mismatch deletes the part and returns
  // DATA_LOSS.
  absl::StatusOr<CommittedFile> CommitVerified(
      absl::string_view job_id, const SidecarKey& key,
      const Sha256Digest& computed_sha256, const Sha256Digest& expected_sha256,
      uint64_t expected_size) const;

  // The batch path for many small sidecars. WriteWholePart writes `data`
  // as the complete part of `job_id` (not synced). CommitBatch then installs
  // many such parts at once: one syncfs makes all their data durable before
  // any is renamed, the renames follow, and a second syncfs makes the names
  // durable, so each final path holds either nothing or the complete file,
  // at two flushes per batch instead of several per file. Batches of at
  // most kFsyncBatchMax items are synced file by file and directory by
  // directory instead: a syncfs also flushes whatever else is dirty on the
  // filesystem, which for one thumbnail can cost far more than its own
  // bytes. The caller has checked each part's SHA-256 while it had the
  // bytes; sizes are checked again here. Returns one status per item.
  struct BatchItem {
    std::string job_id;
    SidecarKey key;
    uint64_t size = 0;
  };
  absl::Status WriteWholePart(absl::string_view job_id,
                              absl::string_view data) const;
  std::vector<absl::Status> CommitBatch(
      absl::Span<const BatchItem> items) const;

  static constexpr size_t kFsyncBatchMax = 8;

  // Deletes the part of `job_id`, if any. INVALID_ARGUMENT for a bad id.
  absl::Status Discard(absl::string_view job_id) const;

  // At start-up: deletes every file in root/.incoming that is not the part
  // of a job in `active_job_ids` (parts of ended jobs, "*.tmp" files,
  // anything else left there). Returns how many files it deleted.
  absl::StatusOr<uint64_t> CleanupStray(
      const absl::flat_hash_set<std::string>& active_job_ids) const;

  // Bytes available to this process on the store's filesystem (statvfs).
  absl::StatusOr<uint64_t> FreeBytes() const;
  // OK iff writing `size` more bytes leaves at least `min_free_bytes` free;
  // else RESOURCE_EXHAUSTED "fetching X would leave Y free on ROOT; at least
  // Z must stay free".
  absl::Status CheckSpace(uint64_t size, uint64_t min_free_bytes) const;

  // root/.incoming/{job_id}.part (job_id as given; not validated).
  std::string PartPath(absl::string_view job_id) const;
  // root/RelativePath(key). REQUIRES: key valid.
  std::string FinalPath(const SidecarKey& key) const;
  const std::string& root() const { return root_; }

 private:
  explicit StoreWriter(std::string root);

  // Syncs, checks size and digest (the given one, or re-read if nullopt),
  // then renames into place.
  absl::StatusOr<CommittedFile> CommitImpl(
      absl::string_view job_id, const SidecarKey& key,
      const std::optional<Sha256Digest>& computed_sha256,
      const Sha256Digest& expected_sha256,
      std::optional<uint64_t> expected_size) const;
  // CommitBatch for a few items: fdatasync, rename and directory fsync per
  // item. `root_fd` and `incoming_fd` are open directories.
  std::vector<absl::Status> CommitFewSynced(absl::Span<const BatchItem> items,
                                            int root_fd, int incoming_fd) const;

  const std::string root_;
  const std::string incoming_;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_STORE_WRITER_H_
