#include "common/sidecar_key.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace sidecar {
namespace {

struct KindRow {
  Kind kind;
  absl::string_view name;
  absl::string_view dir;
};
constexpr KindRow kKinds[] = {
    {v1::SIDECAR_KIND_THUMB, "thumb", "thumbs"},
    {v1::SIDECAR_KIND_THUMBSTRIP, "thumbstrip", "thumbstrips"},
    {v1::SIDECAR_KIND_PROXY, "proxy", "proxies"},
    {v1::SIDECAR_KIND_EMBEDDINGS, "embeddings", "embeddings"},
    {v1::SIDECAR_KIND_OCR, "ocr", "ocr"},
    {v1::SIDECAR_KIND_TRANSCRIPT, "transcript", "transcript"},
    {v1::SIDECAR_KIND_GAUSSIAN_SPLAT, "gaussian_splat", "gaussian_splats"},
};

struct FormatRow {
  Format format;
  absl::string_view name;
  absl::string_view ext;
};
constexpr FormatRow kFormats[] = {
    {v1::SIDECAR_FORMAT_WEBP, "webp", "webp"},
    {v1::SIDECAR_FORMAT_MP4, "mp4", "mp4"},
    {v1::SIDECAR_FORMAT_JSON, "json", "json"},
    {v1::SIDECAR_FORMAT_MESSAGEPACK, "messagepack", "msgpack"},
    {v1::SIDECAR_FORMAT_TEXT, "text", "txt"},
    {v1::SIDECAR_FORMAT_PLY, "ply", "ply"},
};

const KindRow* FindKind(Kind k) {
  for (const auto& row : kKinds)
    if (row.kind == k) return &row;
  return nullptr;
}

const FormatRow* FindFormat(Format f) {
  for (const auto& row : kFormats)
    if (row.format == f) return &row;
  return nullptr;
}

}  // namespace

bool IsUtf8(absl::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n;
    unsigned char lo = 0x80, hi = 0xbf;  // bounds of the second byte
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      unsigned char b = static_cast<unsigned char>(s[i + k]);
      if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xbf)) return false;
    }
    i += n + 1;
  }
  return true;
}

absl::string_view KindDir(Kind kind) {
  const KindRow* r = FindKind(kind);
  return r ? r->dir : absl::string_view();
}

absl::string_view KindName(Kind kind) {
  const KindRow* r = FindKind(kind);
  return r ? r->name : absl::string_view();
}

absl::string_view FormatExt(Format format) {
  const FormatRow* r = FindFormat(format);
  return r ? r->ext : absl::string_view();
}

std::optional<Kind> KindFromName(absl::string_view name) {
  for (const auto& row : kKinds)
    if (row.name == name || row.dir == name) return row.kind;
  return std::nullopt;
}

std::optional<Format> FormatFromName(absl::string_view name) {
  for (const auto& row : kFormats)
    if (row.name == name || row.ext == name) return row.format;
  return std::nullopt;
}

absl::Status ValidateVariant(absl::string_view v) {
  if (v.empty()) {
    return absl::InvalidArgumentError(
        "variant is empty: name the rendition, e.g. \"grid@2x\"");
  }
  if (v.size() > kMaxVariantBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("variant is ", v.size(), " bytes long; at most ",
                     kMaxVariantBytes, " are allowed"));
  }
  for (char c : v) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(
          "variant contains a NUL or control character; use printable "
          "characters only");
    }
    if (c == '/' || c == '\\') {
      return absl::InvalidArgumentError(
          absl::StrCat("variant \"", v,
                       "\" contains a path separator; a variant is one "
                       "file name, e.g. \"grid@2x\""));
    }
  }
  // A URI or a batch file may carry any bytes; a SidecarKey message only
  // UTF-8 (the receiving end refuses anything else).
  if (!IsUtf8(v)) {
    return absl::InvalidArgumentError(
        "variant is not valid UTF-8; use UTF-8 text, e.g. \"grid@2x\"");
  }
  if (v.front() == '.' || v.find("..") != absl::string_view::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("variant \"", v,
                     "\" starts with '.' or contains \"..\"; it must not "
                     "name a hidden file or leave its directory"));
  }
  return absl::OkStatus();
}

absl::Status ValidateKindFormat(int kind, int format) {
  if (!v1::SidecarKind_IsValid(kind) || kind == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown sidecar kind ", kind,
        "; use thumb, thumbstrip, proxy, embeddings, ocr, transcript or "
        "gaussian_splat"));
  }
  if (!v1::SidecarFormat_IsValid(format) || format == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown sidecar format ", format,
                     "; use webp, mp4, json, messagepack, text or ply"));
  }
  return absl::OkStatus();
}

absl::Status ValidateKey(const SidecarKey& key) {
  absl::Status s = ValidateKindFormat(key.kind, key.format);
  if (s.ok()) s = ValidateVariant(key.variant);
  if (s.ok() && key.content.IsNil()) {
    s = absl::InvalidArgumentError("content uuid must not be nil");
  }
  return s;
}

absl::StatusOr<SidecarKey> KeyFromProto(const v1::SidecarKey& proto) {
  SidecarKey key;
  auto uuid = Uuid::Parse(proto.content_uuid());
  if (!uuid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("content_uuid: ", uuid.status().message()));
  }
  key.content = *uuid;
  SC_RETURN_IF_ERROR(ValidateKindFormat(proto.kind(), proto.format()));
  key.kind = proto.kind();
  key.format = proto.format();
  SC_RETURN_IF_ERROR(ValidateVariant(proto.variant()));
  key.variant = proto.variant();
  return key;
}

void KeyToProto(const SidecarKey& key, v1::SidecarKey* proto) {
  proto->set_content_uuid(key.content.ToString());
  proto->set_kind(key.kind);
  proto->set_variant(key.variant);
  proto->set_format(key.format);
}

std::string RelativePath(const SidecarKey& key) {
  std::string hex = key.content.ToHex();
  return absl::StrCat("content/", hex.substr(0, 2), "/", hex.substr(2, 2), "/",
                      key.content.ToString(), "/", KindDir(key.kind), "/",
                      key.variant, ".", FormatExt(key.format));
}

std::string FormatSidecarUri(const SidecarKey& key) {
  return absl::StrCat("sidecar://", key.content.ToString(), "/",
                      KindDir(key.kind), "/", key.variant, ".",
                      FormatExt(key.format));
}

std::string KeyDebugString(const SidecarKey& key) {
  return FormatSidecarUri(key);
}

absl::StatusOr<SidecarKey> ParseSidecarUri(absl::string_view uri) {
  constexpr absl::string_view kScheme = "sidecar://";
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "malformed sidecar URI \"", uri.substr(0, 200), "\": ", why,
        "; expected sidecar://{content_uuid}/{kind_dir}/{variant}.{ext}"));
  };
  if (uri.substr(0, kScheme.size()) != kScheme) return bad("wrong scheme");
  std::vector<absl::string_view> parts =
      absl::StrSplit(uri.substr(kScheme.size()), '/');
  if (parts.size() != 3) return bad("expected exactly three path parts");
  v1::SidecarKey proto;
  proto.set_content_uuid(std::string(parts[0]));
  std::optional<Kind> kind = KindFromName(parts[1]);
  if (!kind) return bad(absl::StrCat("unknown kind \"", parts[1], "\""));
  proto.set_kind(*kind);
  size_t dot = parts[2].rfind('.');
  if (dot == absl::string_view::npos) return bad("no file extension");
  std::optional<Format> fmt = FormatFromName(parts[2].substr(dot + 1));
  if (!fmt) return bad("unknown file extension");
  proto.set_format(*fmt);
  proto.set_variant(std::string(parts[2].substr(0, dot)));
  absl::StatusOr<SidecarKey> key = KeyFromProto(proto);
  if (!key.ok()) return bad(key.status().message());
  return key;
}

}  // namespace sidecar
