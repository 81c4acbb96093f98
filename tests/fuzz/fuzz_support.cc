#include "tests/fuzz/fuzz_support.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "google/protobuf/stubs/logging.h"

namespace sidecar::fuzz {
namespace {

// Protobuf logs an error for every string field that is not UTF-8; fuzzed
// inputs are full of them, and the logging would dominate the run.
[[maybe_unused]] const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

}  // namespace

void Fail(const char* file, int line, const char* what) {
  std::fprintf(stderr, "%s:%d: property violated: %s\n", file, line, what);
  std::abort();
}

bool IsSafeComponent(absl::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f || c == '/' || c == '\\') return false;
  }
  return true;
}

void CheckValidKey(const SidecarKey& key) {
  FUZZ_CHECK(ValidateKindFormat(key.kind, key.format).ok());
  FUZZ_CHECK(ValidateVariant(key.variant).ok());
  FUZZ_CHECK(IsSafeComponent(key.variant));
  FUZZ_CHECK(key.variant.front() != '.');

  v1::SidecarKey proto;
  KeyToProto(key, &proto);
  absl::StatusOr<SidecarKey> from_proto = KeyFromProto(proto);
  FUZZ_CHECK(from_proto.ok() && *from_proto == key);
  // And it survives the wire: a message whose string field is not UTF-8 is
  // refused by the receiving parser.
  std::string wire;
  FUZZ_CHECK(proto.SerializeToString(&wire));
  v1::SidecarKey received;
  FUZZ_CHECK(received.ParseFromString(wire));
  FUZZ_CHECK(KeyFromProto(received).ok() && *KeyFromProto(received) == key);

  std::string uri = FormatSidecarUri(key);
  absl::StatusOr<SidecarKey> from_uri = ParseSidecarUri(uri);
  FUZZ_CHECK(from_uri.ok() && *from_uri == key);
  FUZZ_CHECK(FormatSidecarUri(*from_uri) == uri);

  std::string path = RelativePath(key);
  FUZZ_CHECK(absl::StartsWith(path, "content/"));
  std::vector<absl::string_view> parts = absl::StrSplit(path, '/');
  FUZZ_CHECK(parts.size() == 6);
  for (absl::string_view part : parts) FUZZ_CHECK(IsSafeComponent(part));
  FUZZ_CHECK(parts[3] == key.content.ToString());
  FUZZ_CHECK(parts[4] == KindDir(key.kind));
  FUZZ_CHECK(parts[5] == std::string(key.variant) + "." +
                             std::string(FormatExt(key.format)));
}

}  // namespace sidecar::fuzz
