#include "services/transfer/evictor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/bytes_format.h"
#include "common/log.h"
#include "common/request_limits.h"
#include "common/status_macros.h"
#include "common/transport.h"
#include "common/unique_fd.h"

namespace sidecar::transfer {
namespace {

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::InternalError(
      absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status SyncPath(const std::string& path, int flags) {
  UniqueFd fd(::open(path.c_str(), flags | O_CLOEXEC));
  if (!fd.valid()) return Errno("cannot open", path);
  if (::fsync(fd.get()) != 0) return Errno("cannot sync", path);
  return absl::OkStatus();
}

// Writes `keys` as URIs, one a line, to `path` and makes the file and its
// name durable.
absl::Status WriteJournal(const std::string& dir, const std::string& path,
                          const std::vector<EvictionCandidate>& batch) {
  std::string text;
  for (const EvictionCandidate& c : batch) {
    absl::StrAppend(&text, FormatSidecarUri(c.key), "\n");
  }
  UniqueFd fd(
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd.valid()) return Errno("cannot create the eviction journal", path);
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd.get(), text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Errno("cannot write the eviction journal", path);
    off += static_cast<size_t>(n);
  }
  if (::fdatasync(fd.get()) != 0) return Errno("cannot sync", path);
  return SyncPath(dir, O_RDONLY | O_DIRECTORY);
}

class AvailabilityBackend final : public Evictor::Backend {
 public:
  explicit AvailabilityBackend(AvailabilityClient* c) : c_(c) {}

  absl::StatusOr<std::vector<v1::KindUsage>> LocalUsage() override {
    return c_->LocalUsage();
  }
  absl::StatusOr<std::vector<EvictionCandidate>> ListEvictable(
      Kind kind, uint32_t limit) override {
    SC_ASSIGN_OR_RETURN(std::vector<v1::LocalSidecar> rows,
                        c_->ListEvictable(kind, limit));
    std::vector<EvictionCandidate> out;
    out.reserve(rows.size());
    for (const v1::LocalSidecar& r : rows) {
      absl::StatusOr<SidecarKey> key = KeyFromProto(r.key());
      absl::StatusOr<Sha256Digest> sha = DigestFromBytes(r.sha256());
      if (!key.ok() || !sha.ok()) continue;
      out.push_back({std::move(*key), r.size(), *sha});
    }
    return out;
  }
  absl::StatusOr<std::vector<int>> OnlineOtherHolders(
      absl::Span<const EvictionCandidate> cands) override {
    std::vector<SidecarKey> keys;
    std::vector<uint64_t> sizes;
    std::vector<Sha256Digest> shas;
    for (const EvictionCandidate& c : cands) {
      keys.push_back(c.key);
      sizes.push_back(c.size);
      shas.push_back(c.sha256);
    }
    return c_->OnlineOtherHolders(keys, sizes, shas);
  }
  absl::StatusOr<uint32_t> Remove(absl::Span<const SidecarKey> keys) override {
    return c_->Remove(keys);
  }
  absl::StatusOr<std::vector<bool>> ReadyLocally(
      absl::Span<const SidecarKey> keys) override {
    v1::GetLocalRequest req;
    for (const SidecarKey& k : keys) KeyToProto(k, req.add_keys());
    v1::GetLocalResponse resp;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, absl::Seconds(10));
    grpc::Status s = c_->stub()->GetLocal(&ctx, req, &resp);
    if (!s.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "cannot ask the availability service which evicted sidecars are "
          "still registered: ",
          s.error_message()));
    }
    if (resp.entries_size() != req.keys_size()) {
      return absl::InternalError("availability answered a different count");
    }
    std::vector<bool> out;
    for (const auto& e : resp.entries()) out.push_back(e.ready());
    return out;
  }

 private:
  AvailabilityClient* const c_;
};

}  // namespace

std::vector<size_t> ChooseEvictions(
    absl::Span<const EvictionCandidate> candidates,
    absl::Span<const int> other_holders, uint64_t need,
    bool evict_last_copies) {
  std::vector<size_t> out;
  uint64_t freed = 0;
  for (size_t i = 0; i < candidates.size() && freed < need; ++i) {
    bool held_elsewhere = i < other_holders.size() && other_holders[i] > 0;
    if (!held_elsewhere && !evict_last_copies) continue;
    out.push_back(i);
    freed += candidates[i].size;
  }
  return out;
}

std::unique_ptr<Evictor::Backend> Evictor::ForAvailability(
    AvailabilityClient* client) {
  return std::make_unique<AvailabilityBackend>(client);
}

Evictor::Evictor(Options options, Backend* backend)
    : options_(std::move(options)),
      backend_(backend),
      journal_dir_(absl::StrCat(options_.root, "/", kEvictingDir)),
      quota_(options_.quota) {
  std::error_code ec;
  std::filesystem::create_directories(journal_dir_, ec);
  if (ec) {
    SC_LOG(WARNING) << "cannot make " << journal_dir_ << ": " << ec.message();
  }
}

Evictor::~Evictor() { Stop(); }

Evictor::Admission::Admission(Admission&& other) noexcept
    : evictor_(std::exchange(other.evictor_, nullptr)),
      kind_(other.kind_),
      bytes_(other.bytes_) {}

Evictor::Admission& Evictor::Admission::operator=(Admission&& other) noexcept {
  if (this != &other) {
    Release();
    evictor_ = std::exchange(other.evictor_, nullptr);
    kind_ = other.kind_;
    bytes_ = other.bytes_;
  }
  return *this;
}

void Evictor::Admission::Release() {
  if (Evictor* e = std::exchange(evictor_, nullptr)) e->Ended(kind_, bytes_);
}

void Evictor::Ended(Kind kind, uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  quota_.Ended(kind, bytes);
}

absl::StatusOr<uint64_t> Evictor::Recover() {
  absl::MutexLock elock(&evict_mu_);
  uint64_t deleted = 0;
  std::error_code ec;
  std::vector<std::string> journals;
  for (const auto& e : std::filesystem::directory_iterator(journal_dir_, ec)) {
    journals.push_back(e.path().string());
  }
  if (ec)
    return absl::InternalError(absl::StrCat(journal_dir_, ": ", ec.message()));
  for (const std::string& j : journals) {
    std::ifstream in(j);
    std::vector<SidecarKey> keys;
    std::string line;
    while (std::getline(in, line) && keys.size() < kMaxKeysPerRequest) {
      absl::StatusOr<SidecarKey> k = ParseSidecarUri(line);
      if (k.ok()) keys.push_back(std::move(*k));
    }
    if (!keys.empty()) {
      SC_ASSIGN_OR_RETURN(std::vector<bool> ready,
                          backend_->ReadyLocally(keys));
      for (size_t i = 0; i < keys.size(); ++i) {
        if (ready[i]) continue;  // not withdrawn, or fetched again since
        std::string path =
            absl::StrCat(options_.root, "/", RelativePath(keys[i]));
        if (::unlink(path.c_str()) == 0) {
          ++deleted;
        } else if (errno != ENOENT) {
          return Errno("cannot delete the evicted sidecar", path);
        }
      }
    }
    std::filesystem::remove(j, ec);
  }
  if (deleted > 0) {
    SC_LOG(INFO) << "deleted " << deleted
                 << " files of sidecars withdrawn by an interrupted eviction";
  }
  return deleted;
}

absl::Status Evictor::Refresh() {
  // Not while an eviction withdraws sidecars: a read that ran its query
  // after the withdrawal, and was set before EvictRound applied Evicted,
  // would lose the evicted bytes twice (a store at its quota looked 200
  // KiB under it, and let a prefetch in, in a transfer_fetch_test run).
  absl::MutexLock elock(&evict_mu_);
  // Numbered before the read, so that fetches ending while it runs stay
  // counted (StoreQuota::SetUsage).
  uint64_t read;
  {
    absl::MutexLock lock(&mu_);
    read = quota_.StartRead();
  }
  absl::StatusOr<std::vector<v1::KindUsage>> usage = backend_->LocalUsage();
  absl::MutexLock lock(&mu_);
  if (!usage.ok()) {
    last_error_ = std::string(usage.status().message());
    return usage.status();
  }
  quota_.SetUsage(read, *usage);  // false: a later read was set already
  refreshed_ = true;
  return absl::OkStatus();
}

void Evictor::Start(std::function<void()> on_room) {
  absl::MutexLock lock(&mu_);
  if (thread_.joinable() || stopping_ || !enabled()) return;
  on_room_ = std::move(on_room);
  thread_ = std::thread([this] { Loop(); });
}

void Evictor::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void Evictor::Loop() {
  while (true) {
    if (absl::Status s = Refresh(); !s.ok()) {
      SC_LOG(WARNING) << "store quota: cannot read the usage: " << s;
    } else if (absl::StatusOr<Result> r = EnforceQuota(); !r.ok()) {
      SC_LOG(WARNING) << "store quota: eviction failed: " << r.status();
    }
    bool room = false;
    {
      absl::MutexLock lock(&mu_);
      if (refused_prefetch_ && refreshed_ &&
          quota_.NeedFor(refused_kind_, refused_bytes_).none()) {
        refused_prefetch_ = false;
        room = true;
      }
    }
    if (room && on_room_) on_room_();
    absl::MutexLock lock(&mu_);
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                             options_.refresh_interval)) {
      return;
    }
  }
}

std::optional<Evictor::Admission> Evictor::AdmitIfRoom(Kind kind,
                                                       uint64_t bytes) {
  if (!quota_.NeedFor(kind, bytes).none()) return std::nullopt;
  quota_.Admitted(kind, bytes);
  return Admission(this, kind, bytes);
}

absl::StatusOr<Evictor::Admission> Evictor::Admit(v1::Priority priority,
                                                  Kind kind, uint64_t bytes) {
  if (!enabled()) return Admission();
  bool first = false;
  bool recount = false;
  {
    absl::MutexLock lock(&mu_);
    first = !refreshed_;
    if (!first) {
      if (std::optional<Admission> a = AdmitIfRoom(kind, bytes)) {
        return std::move(*a);
      }
      recount = quota_.ended() > 0;
    }
  }
  if (first || recount) {
    // First: the usage is not known yet (availability was away at start).
    // Recount: a fetch that ended since the last read started may be in it
    // as well, counted twice (StoreQuota); read again before refusing or
    // evicting for bytes that may not be there. (A fetch that had just
    // ended made the next one evict a sidecar that fitted, in a
    // transfer_fetch_test run.)
    absl::Status s = Refresh();
    if (first) SC_RETURN_IF_ERROR(s);
  }
  StoreQuota::Need need;
  {
    absl::MutexLock lock(&mu_);
    if (std::optional<Admission> a = AdmitIfRoom(kind, bytes)) {
      return std::move(*a);
    }
    need = quota_.NeedFor(kind, bytes);
    if (priority == v1::PRIORITY_PREFETCH) {
      if (!refused_prefetch_ || bytes < refused_bytes_) {
        refused_kind_ = kind;
        refused_bytes_ = bytes;
      }
      refused_prefetch_ = true;
      return absl::ResourceExhaustedError(quota_.PrefetchRefusal(kind, bytes));
    }
  }
  // Someone is waiting for this one: make room, in its kind first.
  absl::Status evict_error;
  if (need.of_kind > 0) {
    absl::StatusOr<Result> r = MakeRoom(kind, need.of_kind);
    if (!r.ok()) evict_error = r.status();
  }
  {
    absl::MutexLock lock(&mu_);
    need = quota_.NeedFor(kind, bytes);
  }
  if (need.total > 0) {
    absl::StatusOr<Result> r =
        MakeRoom(v1::SIDECAR_KIND_UNSPECIFIED, need.total);
    if (!r.ok()) evict_error = r.status();
  }
  absl::MutexLock lock(&mu_);
  need = quota_.NeedFor(kind, bytes);
  if (!need.none()) {
    SC_LOG(WARNING) << "store quota: fetching " << KindName(kind) << " of "
                    << HumanBytes(bytes) << " passes the quota by "
                    << HumanBytes(std::max(need.of_kind, need.total))
                    << ": nothing more can be evicted"
                    << (evict_error.ok()
                            ? std::string()
                            : absl::StrCat(" (", evict_error.message(), ")"));
  }
  quota_.Admitted(kind, bytes);
  return Admission(this, kind, bytes);
}

absl::StatusOr<Evictor::Result> Evictor::MakeRoom(Kind kind, uint64_t need) {
  absl::MutexLock elock(&evict_mu_);
  Result total;
  absl::Status last;
  for (int round = 0; round < options_.max_rounds && total.bytes < need;
       ++round) {
    absl::StatusOr<Result> r = EvictRound(kind, need - total.bytes);
    if (!r.ok()) {
      last = r.status();
      break;
    }
    total.evicted += r->evicted;
    total.bytes += r->bytes;
    total.kept_last_copies += r->kept_last_copies;
    if (r->evicted == 0) break;  // nothing (more) can go
  }
  absl::MutexLock lock(&mu_);
  evicted_total_ += total.evicted;
  evicted_bytes_total_ += total.bytes;
  kept_last_copies_ += total.kept_last_copies;
  if (!last.ok()) {
    last_error_ = std::string(last.message());
    if (total.evicted == 0) return last;
  }
  return total;
}

absl::StatusOr<Evictor::Result> Evictor::EvictRound(Kind kind, uint64_t need) {
  SC_ASSIGN_OR_RETURN(std::vector<EvictionCandidate> cands,
                      backend_->ListEvictable(kind, options_.batch));
  Result r;
  if (cands.empty()) return r;
  std::vector<int> holders(cands.size(), 1);
  if (!options_.evict_last_copies) {
    SC_ASSIGN_OR_RETURN(holders, backend_->OnlineOtherHolders(cands));
  }
  std::vector<size_t> chosen =
      ChooseEvictions(cands, holders, need, options_.evict_last_copies);
  // Candidates walked past (before the last chosen one) that had to stay.
  size_t walked = chosen.empty() ? cands.size() : chosen.back() + 1;
  r.kept_last_copies = walked - chosen.size();
  if (chosen.empty()) return r;
  std::vector<EvictionCandidate> batch;
  batch.reserve(chosen.size());
  for (size_t i : chosen) batch.push_back(cands[i]);
  SC_RETURN_IF_ERROR(EvictBatch(batch));
  absl::MutexLock lock(&mu_);
  for (const EvictionCandidate& c : batch) {
    quota_.Evicted(c.key.kind, 1, c.size);
    ++r.evicted;
    r.bytes += c.size;
  }
  return r;
}

absl::Status Evictor::EvictBatch(const std::vector<EvictionCandidate>& batch) {
  const std::string journal =
      absl::StrCat(journal_dir_, "/", ::getpid(), "-", ++journal_seq_, ".list");
  SC_RETURN_IF_ERROR(WriteJournal(journal_dir_, journal, batch));
  std::vector<SidecarKey> keys;
  keys.reserve(batch.size());
  for (const EvictionCandidate& c : batch) keys.push_back(c.key);
  absl::StatusOr<uint32_t> removed = backend_->Remove(keys);
  if (!removed.ok()) {
    // Maybe withdrawn, maybe not: the next start's Recover decides.
    return removed.status();
  }
  absl::Status first;
  for (const SidecarKey& k : keys) {
    std::string path = absl::StrCat(options_.root, "/", RelativePath(k));
    if (::unlink(path.c_str()) != 0 && errno != ENOENT && first.ok()) {
      first = Errno("cannot delete the evicted sidecar", path);
    }
  }
  if (!first.ok()) return first;  // the journal stays for Recover
  ::unlink(journal.c_str());
  SC_LOG(DEBUG) << "evicted " << keys.size() << " sidecars";
  return absl::OkStatus();
}

absl::StatusOr<Evictor::Result> Evictor::EnforceQuota() {
  Result total;
  auto add = [&](const absl::StatusOr<Result>& r) {
    if (!r.ok()) return;
    total.evicted += r->evicted;
    total.bytes += r->bytes;
    total.kept_last_copies += r->kept_last_copies;
  };
  std::vector<std::pair<Kind, uint64_t>> over;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [kind, q] : quota_.config().per_kind) {
      if (uint64_t n = quota_.ExcessOfRead(kind).of_kind; n > 0) {
        over.push_back({kind, n});
      }
    }
  }
  absl::Status last;
  for (const auto& [kind, n] : over) {
    absl::StatusOr<Result> r = MakeRoom(kind, n);
    if (!r.ok()) last = r.status();
    add(r);
  }
  uint64_t n = 0;
  {
    absl::MutexLock lock(&mu_);
    n = quota_.ExcessOfRead(v1::SIDECAR_KIND_UNSPECIFIED).total;
  }
  if (n > 0) {
    absl::StatusOr<Result> r = MakeRoom(v1::SIDECAR_KIND_UNSPECIFIED, n);
    if (!r.ok()) last = r.status();
    add(r);
  }
  if (total.evicted > 0) {
    SC_LOG(INFO) << "store quota: evicted " << total.evicted << " sidecars ("
                 << HumanBytes(total.bytes) << ")";
  }
  if (!last.ok() && total.evicted == 0) return last;
  return total;
}

v1::GetStoreUsageResponse Evictor::Report() const {
  v1::GetStoreUsageResponse out;
  absl::MutexLock lock(&mu_);
  const QuotaConfig& c = quota_.config();
  out.set_quota_bytes(c.total);
  std::map<Kind, v1::StoreKindUsage> kinds;
  for (const auto& [kind, u] : quota_.usage()) {
    v1::StoreKindUsage& k = kinds[kind];
    k.set_kind(kind);
    k.set_own_count(u.own_count());
    k.set_own_bytes(u.own_bytes());
    k.set_fetched_count(u.fetched_count());
    k.set_fetched_bytes(u.fetched_bytes());
    out.set_pinned_bytes(out.pinned_bytes() + u.own_bytes());
    out.set_evictable_bytes(out.evictable_bytes() + u.fetched_bytes());
  }
  for (const auto& [kind, q] : c.per_kind) {
    kinds[kind].set_kind(kind);
    kinds[kind].set_quota_bytes(q);
  }
  for (auto& [kind, k] : kinds) *out.add_kinds() = std::move(k);
  out.set_used_bytes(quota_.Used());
  out.set_evicted_count(evicted_total_);
  out.set_evicted_bytes(evicted_bytes_total_);
  out.set_kept_last_copies(kept_last_copies_);
  out.set_last_error(last_error_);
  return out;
}

}  // namespace sidecar::transfer
