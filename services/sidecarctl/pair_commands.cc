#include "services/sidecarctl/pair_commands.h"

#include <algorithm>
#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/pairing_code.h"
#include "common/transport.h"
#include "services/sidecarctl/format.h"

namespace {
// Also the service's default for a ttl of 0.
constexpr absl::Duration kDefaultInviteTtl = absl::Minutes(10);
}  // namespace

ABSL_FLAG(absl::Duration, ttl, kDefaultInviteTtl,
          "pair invite: how long the code is valid, e.g. 10m, at most 1h");
ABSL_FLAG(bool, removed, false,
          "devices: also list devices removed from the library (unpair)");

namespace sidecar::ctl {
namespace {

using Args = std::vector<std::string>;

// The longest ttl CreateInvite accepts.
constexpr absl::Duration kMaxInviteTtl = absl::Hours(1);
// JoinLibrary reaches another device and exchanges proofs with it: it gets
// at least this long, whatever --timeout says.
constexpr absl::Duration kMinJoinDeadline = absl::Seconds(30);
// Characters of a fingerprint the devices table shows: four groups.
constexpr size_t kShortFingerprint = 19;

absl::Time TimeOf(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

bool IsSet(const google::protobuf::Timestamp& ts) {
  return ts.seconds() != 0 || ts.nanos() != 0;
}

// "2006-01-02 15:04" in local time; "-" if unset.
std::string LocalMinute(const google::protobuf::Timestamp& ts) {
  if (!IsSet(ts)) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M", TimeOf(ts), absl::LocalTimeZone());
}

// "Name (full-device-id)", or the id alone for a device without a name.
std::string NameAndId(const v1::Member& m) {
  if (m.name().empty()) return m.device_id();
  return absl::StrCat(m.name(), " (", m.device_id(), ")");
}

std::string Devices(uint32_t n) {
  return absl::StrCat(n, n == 1 ? " device" : " devices");
}

// ---- pair -----------------------------------------------------------------

int RunPairInvite(CommandContext& ctx, const Args& args) {
  if (args.size() != 1) {
    return ctx.UsageError("usage: sidecarctl pair invite [--ttl=DURATION]");
  }
  const absl::Duration ttl = absl::GetFlag(FLAGS_ttl);
  if (ttl < absl::Seconds(1) || ttl > kMaxInviteTtl) {
    return ctx.UsageError(absl::StrCat(
        "--ttl must be from 1s to ", absl::FormatDuration(kMaxInviteTtl),
        ", e.g. 10m; got ", absl::FormatDuration(ttl)));
  }
  v1::CreateInviteRequest req;
  req.set_ttl_seconds(static_cast<uint32_t>(
      absl::ToInt64Seconds(absl::Ceil(ttl, absl::Seconds(1)))));
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::CreateInviteResponse resp;
  grpc::Status s = ctx.availability().CreateInvite(&cc, req, &resp);
  if (!s.ok()) return ctx.AvailabilityError("pair invite", s);
  if (ctx.json()) return ctx.PrintJson(resp);

  // The time of day; with the date too if that is not today.
  const absl::TimeZone tz = absl::LocalTimeZone();
  const absl::Time expires = TimeOf(resp.expires_at());
  const bool today = absl::FormatTime("%Y-%m-%d", expires, tz) ==
                     absl::FormatTime("%Y-%m-%d", absl::Now(), tz);
  const std::string until =
      absl::FormatTime(today ? "%H:%M:%S" : "%Y-%m-%d %H:%M:%S", expires, tz);
  ctx.out() << "pairing code: " << resp.code() << "   (valid until " << until
            << ", for one device)\n"
            << "on the new device run:\n"
            << "  " << kProgram << " pair join " << resp.code() << " "
            << (resp.peer_address().empty() ? "ADDRESS" : resp.peer_address())
            << "\n";
  if (resp.peer_address().empty()) {
    ctx.out() << "(ADDRESS: the host:port where the new device reaches this "
                 "device's availability\nservice; the service did not say "
                 "it. Without it, the new device tries its --peers.)\n";
  }
  return kExitOk;
}

int RunPairJoin(CommandContext& ctx, const Args& args) {
  if (args.size() < 2 || args.size() > 3) {
    return ctx.UsageError("usage: sidecarctl pair join CODE [ADDRESS]");
  }
  if (absl::GetFlag(FLAGS_ttl) != kDefaultInviteTtl) {
    return ctx.UsageError(
        "--ttl is for \"pair invite\": the inviting device sets how long its "
        "code is valid");
  }
  // Checked here first, so that a mistyped code is a usage error (exit 2)
  // even with no service running; the service checks it again.
  absl::StatusOr<PairingCode> code = PairingCode::Parse(args[1]);
  if (!code.ok()) return ctx.UsageError(code.status().message());

  v1::JoinLibraryRequest req;
  req.set_code(code->ToString());
  if (args.size() == 3) req.set_address(args[2]);
  const absl::Duration deadline = std::max(ctx.timeout(), kMinJoinDeadline);
  grpc::ClientContext cc;
  SetDeadline(&cc, deadline);
  v1::JoinLibraryResponse resp;
  grpc::Status s = ctx.availability().JoinLibrary(&cc, req, &resp);
  if (!s.ok()) return ctx.AvailabilityError("pair join", s, deadline);
  if (ctx.json()) return ctx.PrintJson(resp);
  const v1::Member& inviter = resp.inviter();
  ctx.out() << "paired with " << NameAndId(inviter) << ", fingerprint "
            << (inviter.fingerprint().empty() ? "?" : inviter.fingerprint())
            << "; the library has " << Devices(resp.members()) << "\n";
  return kExitOk;
}

int RunPair(CommandContext& ctx, const Args& args) {
  if (args[0] == "invite") return RunPairInvite(ctx, args);
  if (args[0] == "join") return RunPairJoin(ctx, args);
  return ctx.UsageError(
      absl::StrCat("unknown subcommand \"pair ", args[0],
                   "\"; use \"pair invite [--ttl=DURATION]\" (on a device "
                   "of the library) or \"pair join CODE [ADDRESS]\" (on the "
                   "new device)"));
}

// ---- devices --------------------------------------------------------------

int RunDevices(CommandContext& ctx, const Args&) {
  v1::ListMembersRequest req;
  req.set_include_removed(absl::GetFlag(FLAGS_removed));
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::ListMembersResponse resp;
  grpc::Status s = ctx.availability().ListMembers(&cc, req, &resp);
  if (!s.ok()) return ctx.AvailabilityError("devices", s);
  if (ctx.json()) return ctx.PrintJson(resp);
  if (resp.members().empty()) {
    ctx.out() << "no devices\n";
    return kExitOk;
  }
  absl::flat_hash_map<std::string, std::string> names;
  for (const v1::Member& m : resp.members()) names[m.device_id()] = m.name();
  // A device named by id: its name if it has one, else the short id.
  auto name_of = [&names](const std::string& id, const std::string& name) {
    if (!name.empty()) return name;
    auto it = names.find(id);
    if (it != names.end() && !it->second.empty()) return it->second;
    return ShortId(id);
  };

  std::vector<std::vector<std::string>> rows = {{"NAME", "DEVICE",
                                                 "FINGERPRINT", "ADMITTED BY",
                                                 "SINCE", "ADDRESS", "STATE"}};
  uint32_t members = 0, removed = 0;
  for (const v1::Member& m : resp.members()) {
    std::string fingerprint = m.fingerprint();
    if (fingerprint.empty()) {
      fingerprint = "-";
    } else if (fingerprint.size() > kShortFingerprint) {
      fingerprint =
          absl::StrCat(fingerprint.substr(0, kShortFingerprint), "...");
    }
    std::string admitted_by;
    if (m.admitted_by().empty()) {
      admitted_by = "-";
    } else if (m.admitted_by() == m.device_id()) {
      admitted_by = "(founder)";
    } else {
      admitted_by = name_of(m.admitted_by(), m.admitted_by_name());
    }
    std::string state;
    if (m.removed()) {
      ++removed;
      state = absl::StrCat(
          m.self() ? "this device, " : "", "removed ",
          LocalMinute(m.removed_at()), " by ",
          m.removed_by().empty() ? "?" : name_of(m.removed_by(), ""));
    } else {
      ++members;
      state = m.self() ? "this device" : "member";
    }
    rows.push_back({m.name().empty() ? "?" : m.name(), m.device_id(),
                    fingerprint, admitted_by, LocalMinute(m.admitted_at()),
                    m.peer_address().empty() ? "-" : m.peer_address(), state});
  }
  PrintTable(ctx.out(), rows);
  ctx.out() << Devices(members) << " in the library";
  if (req.include_removed()) ctx.out() << ", " << removed << " removed";
  ctx.out() << "\n";
  return kExitOk;
}

// ---- unpair ---------------------------------------------------------------

int RunUnpair(CommandContext& ctx, const Args& args) {
  if (args[0].empty()) return ctx.UsageError("the device is empty");
  v1::UnpairRequest req;
  req.set_device(args[0]);
  grpc::ClientContext cc;
  ctx.SetCallDeadline(&cc);
  v1::UnpairResponse resp;
  grpc::Status s = ctx.availability().Unpair(&cc, req, &resp);
  if (!s.ok()) {
    int rc = ctx.AvailabilityError("unpair", s);
    if (s.error_code() == grpc::StatusCode::NOT_FOUND ||
        s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
      ctx.err() << kProgram << ": \"sidecarctl devices\" lists the devices\n";
    }
    return rc;
  }
  if (ctx.json()) return ctx.PrintJson(resp);
  const v1::Member& m = resp.removed();
  ctx.out() << "removed " << (m.name().empty() ? "?" : m.name()) << " ("
            << m.device_id()
            << ") from the library; every device refuses it within one "
               "gossip round\n";
  return kExitOk;
}

}  // namespace

std::vector<CommandSpec> PairCommands() {
  std::vector<CommandSpec> c;
  c.push_back(
      {.name = "pair",
       .synopsis = "invite [--ttl=DURATION] | join CODE [ADDRESS]",
       .summary = "pair a new device: \"invite\" here, then \"join\" there",
       .details =
           "pair invite [--ttl=10m]\n"
           "  On a device of the library: makes a pairing code and prints "
           "it, with the\n"
           "  command to run on the new device. A code is valid for one use "
           "(one device)\n"
           "  and expires after --ttl (at most 1h): make one per device.\n"
           "pair join CODE [ADDRESS]\n"
           "  On the new device: pairs it with the device that made CODE, "
           "reached at\n"
           "  ADDRESS (the host:port of its peer listener, as \"pair "
           "invite\" prints it;\n"
           "  without it, the devices configured with --peers are tried). "
           "The code names\n"
           "  the inviting device's key, and the key of the device reached "
           "is checked\n"
           "  against it before anything else is sent: a man in the middle "
           "(or a wrong\n"
           "  address, or a typo) is detected and nothing is paired. Neither "
           "device sends\n"
           "  the code; each proves that it knows it. Prints the inviting "
           "device's\n"
           "  fingerprint (\"sidecarctl devices\" there shows its start). "
           "The call waits\n"
           "  up to --timeout, but at least 30s.",
       .flags = {"ttl"},
       .min_args = 1,
       .max_args = 3,
       .run = RunPair});
  c.push_back(
      {.name = "devices",
       .synopsis = "[--removed]",
       .summary = "list the devices of the library, this one included",
       .details =
           "FINGERPRINT is the start of the fingerprint of the device's "
           "key (\"pair join\"\n"
           "prints it whole). ADMITTED BY is the device that paired it, "
           "(founder) for the\n"
           "one that started the library; SINCE is when. ADDRESS is where "
           "the other\n"
           "devices reach it. STATE is \"this device\", \"member\", or "
           "(with --removed)\n"
           "\"removed TIME by NAME\".",
       .flags = {"removed"},
       .run = RunDevices});
  c.push_back(
      {.name = "unpair",
       .synopsis = "DEVICE",
       .summary = "remove a device from the library, on every device",
       .details =
           "DEVICE is a device id, the start of one, or a name, as "
           "\"sidecarctl devices\"\n"
           "shows them; it must name one device. This device signs the "
           "removal and\n"
           "gossips it: within one gossip round every device refuses the "
           "removed one's\n"
           "connections, even open ones, and drops what it advertised.",
       .min_args = 1,
       .max_args = 1,
       .run = RunUnpair});
  return c;
}

}  // namespace sidecar::ctl
