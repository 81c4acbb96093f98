// Fuzz target: sidecar keys as they come from outside, as sidecar:// URIs
// (ParseSidecarUri: the CLI and batch files) and as sidecar.v1.SidecarKey
// messages (KeyFromProto: every RPC), and the parts they are made of
// (UUIDs, variants, kind and format names). The input is tried as each.
// Properties: every accepted key passes CheckValidKey (round trips, a path
// under the root); a URI that parsed formats back to one naming the same
// key; each part parser agrees with its formatter.
#include <cctype>
#include <cstddef>
#include <cstdint>

#include "absl/strings/ascii.h"
#include "common/sidecar_key.h"
#include "common/uuid.h"
#include "tests/fuzz/fuzz_support.h"

namespace sidecar::fuzz {
namespace {

void FuzzUri(absl::string_view text) {
  absl::StatusOr<SidecarKey> key = ParseSidecarUri(text);
  if (!key.ok()) {
    FUZZ_CHECK(key.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  CheckValidKey(*key);
}

void FuzzProto(const uint8_t* data, size_t size) {
  v1::SidecarKey proto;
  if (!proto.ParseFromArray(data, static_cast<int>(size))) return;
  absl::StatusOr<SidecarKey> key = KeyFromProto(proto);
  if (!key.ok()) {
    FUZZ_CHECK(key.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(key->variant == proto.variant());
  FUZZ_CHECK(static_cast<int>(key->kind) == static_cast<int>(proto.kind()));
  FUZZ_CHECK(static_cast<int>(key->format) == static_cast<int>(proto.format()));
  CheckValidKey(*key);
}

void FuzzParts(absl::string_view text) {
  if (ValidateVariant(text).ok()) {
    FUZZ_CHECK(IsSafeComponent(text));
    FUZZ_CHECK(text.size() <= kMaxVariantBytes);
    FUZZ_CHECK(text.front() != '.');
    FUZZ_CHECK(text.find("..") == absl::string_view::npos);
  }
  if (absl::StatusOr<Uuid> u = Uuid::Parse(text); u.ok()) {
    std::string s = u->ToString();
    FUZZ_CHECK(s == absl::AsciiStrToLower(text));
    FUZZ_CHECK(Uuid::Parse(s).ok() && *Uuid::Parse(s) == *u);
    FUZZ_CHECK(Uuid::FromBytes(u->AsBytes()).ok());
  }
  if (absl::StatusOr<Uuid> u = Uuid::FromBytes(text); u.ok()) {
    FUZZ_CHECK(u->AsBytes() == text);
    FUZZ_CHECK(*Uuid::Parse(u->ToString()) == *u);
  }
  if (std::optional<Kind> k = KindFromName(text)) {
    FUZZ_CHECK(KindFromName(KindDir(*k)) == k);
    FUZZ_CHECK(KindFromName(KindName(*k)) == k);
  }
  if (std::optional<Format> f = FormatFromName(text)) {
    FUZZ_CHECK(FormatFromName(FormatExt(*f)) == f);
  }
}

}  // namespace
}  // namespace sidecar::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace sidecar::fuzz;
  FuzzUri(AsText(data, size));
  FuzzProto(data, size);
  FuzzParts(AsText(data, size));
  return 0;
}
