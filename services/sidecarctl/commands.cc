#include "services/sidecarctl/commands.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "services/sidecarctl/batch_file.h"
#include "services/sidecarctl/format.h"
#include "services/sidecarctl/json_output.h"

ABSL_FLAG(std::string, file, "",
          "register: the sidecar's file, to compute its size and SHA-256");
ABSL_FLAG(std::string, status, "",
          "register: ready|pending|failed (default ready); "
          "ls: only this status (default any)");
ABSL_FLAG(std::string, generator, "",
          "register: version of the generator that made the sidecar");
ABSL_FLAG(std::string, batch, "",
          "register: file of \"URI SIZE SHA256HEX\" lines to register in bulk");
ABSL_FLAG(int64_t, limit, 0,
          "ls: show at most this many (0: all); jobs: at most this many "
          "(0: 100; at most 1000)");
ABSL_FLAG(std::string, kinds, "",
          "missing: comma-separated kinds (thumb,proxy,...); empty: all");
ABSL_FLAG(std::string, mode, "fetch-or-generate",
          "resolve: local-only|fetch-only|fetch-or-generate");
ABSL_FLAG(bool, query_peers, false,
          "ask online peers directly about keys no known device holds");
ABSL_FLAG(int64_t, count, 0, "watch: stop after this many events (0: never)");
ABSL_FLAG(bool, local, false,
          "watch: changes of this device's own sidecars (with neither "
          "--local nor --remote: both)");
ABSL_FLAG(bool, remote, false, "watch: changes learned about peers");

namespace sidecar::ctl {
namespace {

using Args = std::vector<std::string>;

std::string StatusName(v1::SidecarStatus s) {
  switch (s) {
    case v1::SIDECAR_STATUS_READY:
      return "ready";
    case v1::SIDECAR_STATUS_PENDING:
      return "pending";
    case v1::SIDECAR_STATUS_FAILED:
      return "failed";
    default:
      return "?";
  }
}

std::string DeviceLabel(absl::string_view name, absl::string_view id) {
  if (name.empty()) return ShortId(id);
  return absl::StrCat(name, " (", ShortId(id), ")");
}

// ---- device ---------------------------------------------------------------

// What this device holds of the others: a leaf's against its budget.
std::string Mirrored(const v1::DeviceInfo& d) {
  if (d.mirror_budget_entries() == 0) return absl::StrCat(d.mirrored_entries());
  return absl::StrCat(d.mirrored_entries(), " of at most ",
                      d.mirror_budget_entries(), " (leaf)");
}

int RunDevice(CommandContext& ctx, const Args&) {
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::DeviceInfo d;
  grpc::Status s = ctx.availability().GetDevice(&cc, {}, &d);
  if (!s.ok()) return ctx.AvailabilityError("device", s);
  if (ctx.json()) return ctx.PrintJson(d);
  PrintTable(ctx.out(), {
                            {"device id", d.device_id()},
                            {"name", d.name()},
                            {"peer address", d.peer_address()},
                            {"transfer address", d.transfer_address()},
                            {"generation", absl::StrCat(d.generation())},
                            {"change log max seq", absl::StrCat(d.max_seq())},
                            {"ready sidecars", absl::StrCat(d.local_ready())},
                            {"profile", d.profile()},
                            {"mirrored entries", Mirrored(d)},
                        });
  return kExitOk;
}

// ---- register -------------------------------------------------------------

// Sends one Register call; on failure prints the error.
int SendRegister(CommandContext& ctx, const v1::RegisterRequest& req,
                 v1::RegisterResponse* resp) {
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  grpc::Status s = ctx.availability().Register(&cc, req, resp);
  if (!s.ok()) return ctx.AvailabilityError("register", s);
  return kExitOk;
}

int RegisterBatch(CommandContext& ctx, const std::string& path,
                  v1::SidecarStatus status, const std::string& generator) {
  // Pass 1 checks every line, so that a typo does not leave half a batch.
  uint64_t total = 0;
  {
    std::ifstream in(path);
    if (!in)
      return ctx.UsageError(absl::StrCat("cannot read batch file ", path));
    absl::StatusOr<uint64_t> checked = CheckBatchFile(in, path);
    if (!checked.ok()) return ctx.UsageError(checked.status().message());
    total = *checked;
  }
  if (total == 0)
    return ctx.UsageError(absl::StrCat(path, ": no sidecars in it"));

  // Pass 2 sends them, kMaxKeysPerRequest at a time; each call is atomic.
  std::ifstream in(path);
  std::string line;
  v1::RegisterRequest req;
  uint64_t sent = 0, changes = 0, max_seq = 0;
  v1::RegisterResponse sum;  // --json: the calls' answers added up
  auto flush = [&]() -> int {
    v1::RegisterResponse resp;
    if (int rc = SendRegister(ctx, req, &resp); rc != kExitOk) {
      ctx.err() << kProgram << ": " << sent << " of " << total
                << " sidecars were registered before this failure\n";
      return rc;
    }
    sent += req.sidecars_size();
    changes += resp.advertised_changes();
    max_seq = resp.max_seq();
    sum.set_registered(sum.registered() + resp.registered());
    sum.set_advertised_changes(sum.advertised_changes() +
                               resp.advertised_changes());
    sum.set_max_seq(resp.max_seq());
    req.clear_sidecars();
    if (total > kMaxKeysPerRequest && !ctx.json()) {
      ctx.out() << "  registered " << sent << "/" << total << "\n";
    }
    return kExitOk;
  };
  while (std::getline(in, line)) {
    v1::LocalSidecar* s = req.add_sidecars();
    absl::StatusOr<bool> used = ParseBatchLine(line, s);
    if (!used.ok() || !*used) {
      req.mutable_sidecars()->RemoveLast();
      continue;
    }
    s->set_status(status);
    s->set_generator_version(generator);
    if (static_cast<size_t>(req.sidecars_size()) == kMaxKeysPerRequest) {
      if (int rc = flush(); rc != kExitOk) return rc;
    }
  }
  if (req.sidecars_size() > 0) {
    if (int rc = flush(); rc != kExitOk) return rc;
  }
  if (ctx.json()) return ctx.PrintJson(sum);
  ctx.out() << "registered " << sent << " sidecars from " << path << " as "
            << StatusName(status) << " (" << changes
            << " change-log entries, max seq " << max_seq << ")\n";
  return kExitOk;
}

int RunRegister(CommandContext& ctx, const Args& args) {
  std::string status_name = absl::GetFlag(FLAGS_status);
  absl::StatusOr<v1::SidecarStatus> status =
      ParseStatusName(status_name.empty() ? "ready" : status_name, false);
  if (!status.ok()) return ctx.UsageError(status.status().message());
  const std::string generator = absl::GetFlag(FLAGS_generator);
  const std::string file = absl::GetFlag(FLAGS_file);
  const std::string batch = absl::GetFlag(FLAGS_batch);

  if (!batch.empty()) {
    if (!args.empty() || !file.empty()) {
      return ctx.UsageError(
          "give either URI --file=PATH or --batch=FILE, not both");
    }
    return RegisterBatch(ctx, batch, *status, generator);
  }
  if (args.size() != 1) {
    return ctx.UsageError(
        "usage: sidecarctl register URI --file=PATH, or register "
        "--batch=FILE");
  }
  absl::StatusOr<SidecarKey> key = ParseUri(args[0]);
  if (!key.ok()) return ctx.UsageError(key.status().message());

  v1::RegisterRequest req;
  v1::LocalSidecar* s = req.add_sidecars();
  KeyToProto(*key, s->mutable_key());
  s->set_status(*status);
  s->set_generator_version(generator);
  if (file.empty()) {
    if (*status == v1::SIDECAR_STATUS_READY) {
      return ctx.UsageError(
          "a ready sidecar needs its size and checksum: give --file=PATH "
          "(or --status=pending / --status=failed)");
    }
  } else {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec)) {
      return ctx.UsageError(absl::StrCat(file, ": not a readable file"));
    }
    uintmax_t size = std::filesystem::file_size(file, ec);
    if (ec) {
      return ctx.UsageError(absl::StrCat(file, ": ", ec.message()));
    }
    absl::StatusOr<Sha256Digest> digest = Sha256OfFile(file);
    if (!digest.ok()) {
      return ctx.UsageError(
          absl::StrCat(file, ": ", digest.status().message()));
    }
    s->set_size(size);
    s->set_sha256(std::string(DigestBytes(*digest)));
  }

  v1::RegisterResponse resp;
  if (int rc = SendRegister(ctx, req, &resp); rc != kExitOk) return rc;
  if (ctx.json()) return ctx.PrintJson(resp);
  ctx.out() << "registered " << FormatSidecarUri(*key) << " as "
            << StatusName(*status);
  if (!file.empty()) {
    ctx.out() << ": " << HumanBytes(s->size()) << ", sha256 "
              << ShortSha(s->sha256());
  }
  ctx.out() << "\n  layout path: " << RelativePath(*key)
            << "\n  change log: " << resp.advertised_changes() << " new "
            << (resp.advertised_changes() == 1 ? "entry" : "entries")
            << ", max seq " << resp.max_seq() << "\n";
  return kExitOk;
}

// ---- remove ---------------------------------------------------------------

int RunRemove(CommandContext& ctx, const Args& args) {
  std::vector<v1::SidecarKey> keys;
  if (int rc = ParseUris(ctx, args, &keys); rc != kExitOk) return rc;
  uint64_t removed = 0, not_found = 0;
  v1::RemoveResponse sum;  // --json: the calls' answers added up
  for (size_t i = 0; i < keys.size(); i += kMaxKeysPerRequest) {
    v1::RemoveRequest req;
    size_t end = std::min(keys.size(), i + kMaxKeysPerRequest);
    for (size_t j = i; j < end; ++j) *req.add_keys() = keys[j];
    grpc::ClientContext cc;
    ctx.SetCallDeadline(&cc);
    v1::RemoveResponse resp;
    grpc::Status s = ctx.availability().Remove(&cc, req, &resp);
    if (!s.ok()) {
      if (removed > 0) {
        ctx.err() << kProgram << ": " << removed
                  << " sidecars were removed before this failure\n";
      }
      return ctx.AvailabilityError("remove", s);
    }
    removed += resp.removed();
    not_found += resp.not_found();
    sum.set_removed(sum.removed() + resp.removed());
    sum.set_not_found(sum.not_found() + resp.not_found());
    sum.set_max_seq(resp.max_seq());
  }
  if (ctx.json()) return ctx.PrintJson(sum);
  ctx.out() << "removed " << removed << " sidecar" << (removed == 1 ? "" : "s");
  if (not_found > 0) {
    ctx.out() << "; " << not_found << " " << (not_found == 1 ? "was" : "were")
              << " not registered on this device";
  }
  ctx.out() << "\n";
  return kExitOk;
}

// ---- ls -------------------------------------------------------------------

int RunMissing(CommandContext& ctx, const Args&) {
  const int64_t limit = absl::GetFlag(FLAGS_limit);
  if (limit < 0) return ctx.UsageError("--limit must be 0 (all) or more");
  std::vector<Kind> kinds;
  for (absl::string_view k : absl::StrSplit(absl::GetFlag(FLAGS_kinds), ',',
                                            absl::SkipWhitespace())) {
    std::optional<Kind> kind = KindFromName(absl::StripAsciiWhitespace(k));
    if (!kind) {
      return ctx.UsageError(absl::StrCat(
          "--kinds: unknown kind \"", k,
          "\" (thumb, thumbstrip, proxy, embeddings, ocr, transcript, "
          "gaussian_splat)"));
    }
    kinds.push_back(*kind);
  }
  int64_t shown = 0;
  std::string token;
  bool more = false;
  v1::ListMissingResponse all;  // --json: the pages as one answer
  do {
    v1::ListMissingRequest req;
    for (Kind k : kinds) req.add_kinds(k);
    int64_t page = 1000;
    if (limit > 0) page = std::min<int64_t>(page, limit - shown);
    req.set_page_size(static_cast<uint32_t>(page));
    req.set_page_token(token);
    grpc::ClientContext cc;
    ctx.SetCallDeadline(&cc);
    v1::ListMissingResponse resp;
    grpc::Status s = ctx.availability().ListMissing(&cc, req, &resp);
    if (!s.ok()) return ctx.AvailabilityError("missing", s);
    for (const v1::SidecarKey& k : resp.keys()) {
      if (limit > 0 && shown >= limit) break;
      if (ctx.json()) {
        *all.add_keys() = k;
      } else {
        ctx.out() << UriOf(k) << "\n";
      }
      ++shown;
    }
    token = resp.next_page_token();
    more = !token.empty();
  } while (more && (limit == 0 || shown < limit));
  if (ctx.json()) {
    all.set_next_page_token(token);
    return ctx.PrintJson(all);
  }
  ctx.out() << shown << " sidecar" << (shown == 1 ? "" : "s")
            << " held by peers and not here";
  if (more && limit > 0 && shown >= limit) {
    ctx.out() << " shown; more may exist (raise --limit)";
  }
  ctx.out() << "\n";
  return kExitOk;
}

int RunLs(CommandContext& ctx, const Args&) {
  absl::StatusOr<v1::SidecarStatus> status =
      ParseStatusName(absl::GetFlag(FLAGS_status), true);
  if (!status.ok()) return ctx.UsageError(status.status().message());
  const int64_t limit = absl::GetFlag(FLAGS_limit);
  if (limit < 0) return ctx.UsageError("--limit must be 0 (all) or more");

  // Printed a page at a time (a device may hold millions of sidecars); the
  // header goes with the first page so that its widths fit the rows.
  std::vector<std::vector<std::string>> rows = {
      {"STATUS", "SIZE", "SHA256", "GENERATOR", "URI"}};
  std::vector<size_t> width;
  int64_t shown = 0;
  std::string token;
  bool more = false;
  v1::ListLocalResponse all;  // --json: the pages as one answer
  do {
    v1::ListLocalRequest req;
    int64_t page = 1000;
    if (limit > 0) page = std::min<int64_t>(page, limit - shown);
    req.set_page_size(static_cast<uint32_t>(page));
    req.set_page_token(token);
    req.set_status(*status);
    grpc::ClientContext cc;
    ctx.SetCallDeadline(&cc);
    v1::ListLocalResponse resp;
    grpc::Status s = ctx.availability().ListLocal(&cc, req, &resp);
    if (!s.ok()) return ctx.AvailabilityError("ls", s);
    for (const v1::LocalSidecar& sc : resp.sidecars()) {
      if (limit > 0 && shown >= limit) break;
      ++shown;
      if (ctx.json()) {
        *all.add_sidecars() = sc;
        continue;
      }
      rows.push_back(
          {StatusName(sc.status()), HumanBytes(sc.size()),
           ShortSha(sc.sha256()),
           sc.generator_version().empty() ? "-" : sc.generator_version(),
           UriOf(sc.key())});
    }
    if (!ctx.json()) PrintTablePart(ctx.out(), rows, &width);
    rows.clear();
    token = resp.next_page_token();
    more = !token.empty();
  } while (more && (limit == 0 || shown < limit));
  if (ctx.json()) {
    all.set_next_page_token(token);
    return ctx.PrintJson(all);
  }
  ctx.out() << shown << " sidecar" << (shown == 1 ? "" : "s");
  if (more) ctx.out() << " shown; more exist (raise --limit)";
  ctx.out() << "\n";
  return kExitOk;
}

// ---- who-has --------------------------------------------------------------

// Appends the answer of one WhoHas call to `all`, the answer for every key
// so far: its devices once each (by id), its holders' indexes into them.
void AppendWhoHas(const v1::WhoHasResponse& part, v1::WhoHasResponse* all) {
  std::vector<uint32_t> index;  // part's device index -> all's
  for (const v1::DeviceRef& d : part.devices()) {
    int found = -1;
    for (int k = 0; k < all->devices_size(); ++k) {
      if (all->devices(k).device_id() == d.device_id()) found = k;
    }
    if (found < 0) {
      found = all->devices_size();
      *all->add_devices() = d;
    }
    index.push_back(static_cast<uint32_t>(found));
  }
  for (const v1::KeyHolders& r : part.results()) {
    v1::KeyHolders* copy = all->add_results();
    *copy = r;
    for (v1::Holder& h : *copy->mutable_holders()) {
      if (h.device() < index.size()) h.set_device(index[h.device()]);
    }
  }
}

int RunWhoHas(CommandContext& ctx, const Args& args) {
  std::vector<v1::SidecarKey> keys;
  if (int rc = ParseUris(ctx, args, &keys); rc != kExitOk) return rc;
  v1::WhoHasResponse all;  // --json: the calls' answers as one
  for (size_t i = 0; i < keys.size(); i += kMaxKeysPerRequest) {
    v1::WhoHasRequest req;
    req.set_query_peers(absl::GetFlag(FLAGS_query_peers));
    size_t end = std::min(keys.size(), i + kMaxKeysPerRequest);
    for (size_t j = i; j < end; ++j) *req.add_keys() = keys[j];
    grpc::ClientContext cc;
    ctx.SetCallDeadline(&cc);
    v1::WhoHasResponse resp;
    grpc::Status s = ctx.availability().WhoHas(&cc, req, &resp);
    if (!s.ok()) return ctx.AvailabilityError("who-has", s);
    if (ctx.json()) {
      AppendWhoHas(resp, &all);
      continue;
    }
    for (size_t j = i; j < end; ++j) {
      ctx.out() << UriOf(keys[j]) << "\n";
      const int r = static_cast<int>(j - i);
      if (r >= resp.results_size() || resp.results(r).holders().empty()) {
        ctx.out() << "  no device is known to hold it\n";
        continue;
      }
      std::vector<std::vector<std::string>> rows = {
          {"  DEVICE", "STATE", "RTT", "SIZE", "SHA256", "VERSION"}};
      std::set<std::string> checksums;
      for (const v1::Holder& h : resp.results(r).holders()) {
        checksums.insert(h.sha256());
        std::vector<std::string> row;
        if (h.device() < static_cast<uint32_t>(resp.devices_size())) {
          const v1::DeviceRef& d = resp.devices(h.device());
          row = {absl::StrCat("  ", DeviceLabel(d.name(), d.device_id())),
                 d.is_local() ? "this device"
                              : (d.online() ? "online" : "offline"),
                 Rtt(d.rtt_micros())};
        } else {
          row = {"  ?", "?", "-"};
        }
        row.push_back(HumanBytes(h.size()));
        row.push_back(ShortSha(h.sha256()));
        row.push_back(h.generator_version().empty() ? "-"
                                                    : h.generator_version());
        rows.push_back(std::move(row));
      }
      PrintTable(ctx.out(), rows);
      const auto& conflicts = resp.results(r).conflicting_versions();
      if (!conflicts.empty()) {
        ctx.out() << "  conflict: holders of generator version "
                  << absl::StrJoin(conflicts, ", ")
                  << " disagree on its checksum\n";
      } else if (checksums.size() > 1) {
        ctx.out() << "  note: the holders disagree on its checksum\n";
      }
    }
  }
  if (ctx.json()) return ctx.PrintJson(all);
  return kExitOk;
}

// ---- resolve --------------------------------------------------------------

int RunResolve(CommandContext& ctx, const Args& args) {
  absl::StatusOr<v1::ResolveMode> mode =
      ParseResolveMode(absl::GetFlag(FLAGS_mode));
  if (!mode.ok()) return ctx.UsageError(mode.status().message());
  absl::StatusOr<SidecarKey> key = ParseUri(args[0]);
  if (!key.ok()) return ctx.UsageError(key.status().message());

  v1::ResolveRequest req;
  KeyToProto(*key, req.mutable_key());
  req.set_mode(*mode);
  req.set_query_peers(absl::GetFlag(FLAGS_query_peers));
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::ResolveResponse resp;
  grpc::Status s = ctx.availability().Resolve(&cc, req, &resp);
  if (!s.ok()) return ctx.AvailabilityError("resolve", s);
  if (ctx.json()) return ctx.PrintJson(resp);

  std::string outcome(absl::StripPrefix(
      v1::ResolveResponse::Outcome_Name(resp.outcome()), "OUTCOME_"));
  std::vector<std::vector<std::string>> rows = {{"  outcome", outcome}};
  if (!resp.reason().empty()) rows.push_back({"  reason", resp.reason()});
  if (!resp.relative_path().empty()) {
    rows.push_back({"  layout path", resp.relative_path()});
  }
  if (resp.outcome() == v1::ResolveResponse::OUTCOME_LOCAL) {
    rows.push_back({"  local file", resp.local_path()});
    rows.push_back({"  size", HumanBytes(resp.size())});
    rows.push_back({"  sha256", Hex(resp.sha256())});
    rows.push_back({"  version", resp.generator_version().empty()
                                     ? "-"
                                     : resp.generator_version()});
    if (resp.stale()) {
      rows.push_back({"  stale", "yes: a holder has a newer version"});
    }
  }
  if (!resp.conflicting_versions().empty()) {
    rows.push_back(
        {"  conflict",
         absl::StrCat("holders of version ",
                      absl::StrJoin(resp.conflicting_versions(), ", "),
                      " disagree on its checksum")});
  }
  ctx.out() << FormatSidecarUri(*key) << "\n";
  PrintTable(ctx.out(), rows);
  if (!resp.sources().empty()) {
    ctx.out() << "  sources, best first:\n";
    std::vector<std::vector<std::string>> src = {
        {"    #", "DEVICE", "TRANSFER ADDRESS", "RTT", "THROUGHPUT", "SIZE",
         "SHA256", "VERSION"}};
    int n = 0;
    for (const v1::Source& so : resp.sources()) {
      src.push_back(
          {absl::StrCat("    ", ++n), DeviceLabel(so.name(), so.device_id()),
           so.transfer_address().empty() ? "-" : so.transfer_address(),
           Rtt(so.rtt_micros()), Throughput(so.throughput_bytes_per_sec()),
           HumanBytes(so.size()), ShortSha(so.sha256()),
           so.generator_version().empty() ? "-" : so.generator_version()});
    }
    PrintTable(ctx.out(), src);
  }
  return kExitOk;
}

// ---- peers ----------------------------------------------------------------

int RunPeers(CommandContext& ctx, const Args&) {
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::ListPeersResponse resp;
  grpc::Status s = ctx.availability().ListPeers(&cc, {}, &resp);
  if (!s.ok()) return ctx.AvailabilityError("peers", s);
  if (ctx.json()) return ctx.PrintJson(resp);
  if (resp.peers().empty()) {
    ctx.out() << "no peers: pair this device with another (sidecarctl pair "
                 "invite there, sidecarctl pair join here)\n";
    return kExitOk;
  }
  const absl::Time now = absl::Now();
  std::vector<std::vector<std::string>> rows = {
      {"NAME", "DEVICE", "PEER ADDRESS", "STATE", "FROM", "RTT", "SIDECARS",
       "LAST CONTACT", "LAST ERROR"}};
  for (const v1::PeerInfo& p : resp.peers()) {
    rows.push_back(
        {p.name().empty() ? "?" : p.name(), ShortId(p.device_id()),
         p.peer_address(),
         absl::StrCat(p.online() ? "online" : "offline",
                      p.leaf() ? ", leaf" : ""),
         p.configured() ? "paired" : "library", Rtt(p.rtt_micros()),
         p.not_mirrored() ? "not mirrored" : absl::StrCat(p.sidecars()),
         Ago(p.last_contact(), now),
         p.last_error().empty() ? "-" : p.last_error()});
  }
  PrintTable(ctx.out(), rows);
  return kExitOk;
}

// ---- watch ----------------------------------------------------------------

// Names of devices by id, learned from GetDevice and ListPeers.
class DeviceNames {
 public:
  explicit DeviceNames(CommandContext& ctx) : ctx_(ctx) {}

  // Looks the device up; asks the service again (once per unknown id) when
  // it is not known yet.
  std::string Label(const std::string& id) {
    auto it = names_.find(id);
    if (it == names_.end() && asked_.insert(id).second) {
      Refresh();
      it = names_.find(id);
    }
    return DeviceLabel(it == names_.end() ? "" : it->second, id);
  }

  // Best effort: errors leave the map as it was.
  void Refresh() {
    grpc::ClientContext cc;
    ctx_.SetCallDeadline(&cc);
    v1::ListPeersResponse resp;
    if (ctx_.availability().ListPeers(&cc, {}, &resp).ok()) {
      for (const v1::PeerInfo& p : resp.peers()) {
        if (!p.device_id().empty()) names_[p.device_id()] = p.name();
      }
    }
  }

  void Add(const std::string& id, const std::string& name) {
    names_[id] = name;
  }

 private:
  CommandContext& ctx_;
  absl::flat_hash_map<std::string, std::string> names_;
  std::set<std::string> asked_;
};

// One line of watch's text: time, event type, device, and what changed.
std::string EventLine(const v1::AvailabilityEvent& ev, DeviceNames& names) {
  std::string type(
      absl::StripPrefix(v1::AvailabilityEvent::Type_Name(ev.type()), "TYPE_"));
  std::string line = absl::StrFormat(
      "%s  %-7s  %s",
      absl::FormatTime("%H:%M:%E3S", absl::Now(), absl::LocalTimeZone()), type,
      names.Label(ev.device_id()));
  if (ev.is_local()) absl::StrAppend(&line, " [this device]");
  if (ev.type() == v1::AvailabilityEvent::TYPE_ADDED ||
      ev.type() == v1::AvailabilityEvent::TYPE_REMOVED) {
    absl::StrAppend(&line, "  ", UriOf(ev.key()));
  }
  if (ev.type() == v1::AvailabilityEvent::TYPE_ADDED) {
    absl::StrAppend(&line, "  ", HumanBytes(ev.size()), "  ",
                    ShortSha(ev.sha256()));
  }
  if (ev.type() == v1::AvailabilityEvent::TYPE_RESET) {
    absl::StrAppend(&line, "  (everything known of it was replaced)");
  }
  return line;
}

int RunWatch(CommandContext& ctx, const Args&) {
  const int64_t count = absl::GetFlag(FLAGS_count);
  if (count < 0)
    return ctx.UsageError("--count must be 0 (never stop) or more");

  // Also checks that the service is there before settling into the stream.
  DeviceNames names(ctx);
  {
    grpc::ClientContext cc;
    ctx.SetCallDeadline(&cc);
    v1::DeviceInfo self;
    grpc::Status s = ctx.availability().GetDevice(&cc, {}, &self);
    if (!s.ok()) return ctx.AvailabilityError("watch", s);
    names.Add(self.device_id(), self.name());
    names.Refresh();
    ctx.err() << "watching " << DeviceLabel(self.name(), self.device_id())
              << " at " << ctx.availability_address()
              << (count > 0 ? absl::StrCat(" for ", count, " events")
                            : std::string(" (Ctrl-C stops)"))
              << "\n";
  }

  v1::WatchRequest req;
  req.set_include_local(absl::GetFlag(FLAGS_local));
  req.set_include_remote(absl::GetFlag(FLAGS_remote));
  grpc::ClientContext cc;  // no deadline: runs until stopped
  InterruptWatcher interrupt([&cc] { cc.TryCancel(); });
  std::unique_ptr<grpc::ClientReader<v1::AvailabilityEvent>> reader =
      ctx.availability().Watch(&cc, req);
  v1::AvailabilityEvent ev;
  int64_t seen = 0;
  bool done = false;
  while (!done && reader->Read(&ev)) {
    // With --json a stream is one document per event (JSON Lines).
    ctx.out() << (ctx.json() ? MessageJson(ev) : EventLine(ev, names))
              << std::endl;
    if (count > 0 && ++seen >= count) {
      done = true;
      cc.TryCancel();
    }
  }
  grpc::Status s = reader->Finish();
  if (done || interrupt.interrupted()) return kExitOk;
  if (s.ok()) {
    ctx.err() << kProgram << ": the service ended the stream\n";
    return kExitOk;
  }
  return ctx.AvailabilityError("watch", s);
}

}  // namespace

std::string UriOf(const v1::SidecarKey& proto) {
  absl::StatusOr<SidecarKey> key = KeyFromProto(proto);
  if (!key.ok())
    return absl::StrCat("<invalid key: ", key.status().message(), ">");
  return FormatSidecarUri(*key);
}

int ParseUris(CommandContext& ctx, const std::vector<std::string>& uris,
              std::vector<v1::SidecarKey>* keys) {
  for (const std::string& uri : uris) {
    absl::StatusOr<SidecarKey> key = ParseUri(uri);
    if (!key.ok()) return ctx.UsageError(key.status().message());
    KeyToProto(*key, &keys->emplace_back());
  }
  return kExitOk;
}

absl::StatusOr<v1::SidecarStatus> ParseStatusName(absl::string_view name,
                                                  bool allow_any) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "ready") return v1::SIDECAR_STATUS_READY;
  if (n == "pending") return v1::SIDECAR_STATUS_PENDING;
  if (n == "failed") return v1::SIDECAR_STATUS_FAILED;
  if (allow_any && (n.empty() || n == "any")) {
    return v1::SIDECAR_STATUS_UNSPECIFIED;
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown status \"", name, "\"; use ready, pending or failed",
      allow_any ? " (or any)" : ""));
}

absl::StatusOr<v1::ResolveMode> ParseResolveMode(absl::string_view name) {
  std::string n = absl::AsciiStrToLower(name);
  if (n == "local-only") return v1::RESOLVE_MODE_LOCAL_ONLY;
  if (n == "fetch-only") return v1::RESOLVE_MODE_FETCH_ONLY;
  if (n == "fetch-or-generate") return v1::RESOLVE_MODE_FETCH_OR_GENERATE;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown mode \"", name,
                   "\"; use local-only, fetch-only or fetch-or-generate"));
}

std::vector<CommandSpec> AvailabilityCommands() {
  std::vector<CommandSpec> c;
  c.push_back({.name = "device",
               .summary = "show this device: id, name, addresses, change log",
               .run = RunDevice});
  c.push_back(
      {.name = "register",
       .synopsis = "URI --file=PATH [--status=S] [--generator=V] | "
                   "--batch=FILE",
       .summary = "record local sidecars (READY ones are advertised to peers)",
       .details =
           "With URI and --file, computes the file's size and SHA-256 and "
           "records it.\nWith --batch, reads lines \"URI SIZE SHA256HEX\" "
           "('#' comments allowed), checks\nthem all, then registers them "
           "10,000 per call (each call is atomic).",
       .flags = {"file", "status", "generator", "batch"},
       .max_args = 1,
       .run = RunRegister});
  c.push_back({.name = "remove",
               .synopsis = "URI...",
               .summary = "forget local sidecars (peers learn they are gone)",
               .min_args = 1,
               .max_args = CommandSpec::kUnlimited,
               .run = RunRemove});
  c.push_back({.name = "ls",
               .synopsis = "[--status=S] [--limit=N]",
               .summary = "list this device's sidecars in key order",
               .flags = {"status", "limit"},
               .run = RunLs});
  c.push_back({.name = "missing",
               .synopsis = "[--kinds=K,...] [--limit=N]",
               .summary = "list sidecars peers hold and this device lacks",
               .flags = {"kinds", "limit"},
               .run = RunMissing});
  c.push_back({.name = "who-has",
               .synopsis = "URI... [--query_peers]",
               .summary = "show which devices hold each sidecar",
               .flags = {"query_peers"},
               .min_args = 1,
               .max_args = CommandSpec::kUnlimited,
               .run = RunWhoHas});
  c.push_back(
      {.name = "resolve",
       .synopsis = "URI [--mode=M] [--query_peers]",
       .summary = "decide how to get a sidecar: LOCAL, REMOTE, GENERATE",
       .details = "Modes: local-only (LOCAL or GENERATE), fetch-only (LOCAL, "
                  "REMOTE or UNAVAILABLE),\nfetch-or-generate (the default).",
       .flags = {"mode", "query_peers"},
       .min_args = 1,
       .max_args = 1,
       .run = RunResolve});
  c.push_back({.name = "peers",
               .summary = "list known peers: configured and learned by gossip",
               .run = RunPeers});
  c.push_back({.name = "watch",
               .synopsis = "[--count=N] [--local] [--remote]",
               .summary = "print availability changes as they happen",
               .flags = {"count", "local", "remote"},
               .wants_signals = true,
               .run = RunWatch});
  return c;
}

}  // namespace sidecar::ctl
