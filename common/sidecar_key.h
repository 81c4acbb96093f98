// SidecarKey: the validated, in-memory form of sidecar.v1.SidecarKey, with the
// on-disk path layout (Spacedrive-compatible) and the sidecar:// URI form.
//
//   content/{h0}/{h1}/{content_uuid}/{kind_dir}/{variant}.{ext}
//   sidecar://{content_uuid}/{kind_dir}/{variant}.{ext}
//
// Every key that leaves this header valid yields a path that stays inside the
// sidecar root; validation is the only gate, so every entry point (RPC, CLI,
// URI) goes through KeyFromProto or ParseSidecarUri.
#ifndef SIDECAR_COMMON_SIDECAR_KEY_H_
#define SIDECAR_COMMON_SIDECAR_KEY_H_

#include <compare>
#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/uuid.h"
#include "sidecar/v1/sidecar.pb.h"

namespace sidecar {

using Kind = v1::SidecarKind;
using Format = v1::SidecarFormat;

inline constexpr size_t kMaxVariantBytes = 64;

struct SidecarKey {
  Uuid content;
  Kind kind = v1::SIDECAR_KIND_UNSPECIFIED;
  std::string variant;
  Format format = v1::SIDECAR_FORMAT_UNSPECIFIED;

  auto operator<=>(const SidecarKey&) const = default;
  bool operator==(const SidecarKey&) const = default;

  template <typename H>
  friend H AbslHashValue(H h, const SidecarKey& k) {
    return H::combine(std::move(h), k.content, static_cast<int>(k.kind),
                      k.variant, static_cast<int>(k.format));
  }
};

// Directory name of a kind ("thumbs"); empty for an unknown kind.
absl::string_view KindDir(Kind kind);
// Short name of a kind as the reference spells it ("thumb").
absl::string_view KindName(Kind kind);
// File extension of a format without the dot ("msgpack"); empty if unknown.
absl::string_view FormatExt(Format format);
// Accepts a kind name ("thumb") or directory ("thumbs").
std::optional<Kind> KindFromName(absl::string_view name);
// Accepts a format name ("messagepack") or extension ("msgpack").
std::optional<Format> FormatFromName(absl::string_view name);

// Whether `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), as protobuf requires of a string.
bool IsUtf8(absl::string_view s);

// OK iff the variant is a safe single path component: 1..64 bytes of
// UTF-8, no '/', '\\', NUL or control characters (< 0x20, 0x7f), not "." /
// "..", no "..", and not starting with '.'. The message says what to change.
absl::Status ValidateVariant(absl::string_view variant);
// Validates kind and format enum values.
absl::Status ValidateKindFormat(int kind, int format);

// Validates a key built or stored in memory rather than parsed: kind and
// format, variant, and a content UUID that is not nil. INVALID_ARGUMENT
// saying what is wrong.
absl::Status ValidateKey(const SidecarKey& key);

// Validates and converts. Every failure is INVALID_ARGUMENT naming the field.
absl::StatusOr<SidecarKey> KeyFromProto(const v1::SidecarKey& proto);
void KeyToProto(const SidecarKey& key, v1::SidecarKey* proto);

// "content/55/0e/550e8400-.../thumbs/grid@2x.webp". REQUIRES: key valid.
std::string RelativePath(const SidecarKey& key);
// "sidecar://550e8400-.../thumbs/grid@2x.webp". REQUIRES: key valid.
std::string FormatSidecarUri(const SidecarKey& key);
// Parses the URI form; INVALID_ARGUMENT with the reason if malformed.
absl::StatusOr<SidecarKey> ParseSidecarUri(absl::string_view uri);
// Human-readable form for logs and messages (the URI).
std::string KeyDebugString(const SidecarKey& key);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_SIDECAR_KEY_H_
