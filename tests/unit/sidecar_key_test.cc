#include "common/sidecar_key.h"

#include <gtest/gtest.h>

#include <string>

#include "common/sha256.h"
#include "common/uuid.h"

namespace sidecar {
namespace {

v1::SidecarKey Proto(std::string uuid, Kind kind, std::string variant,
                     Format format) {
  v1::SidecarKey p;
  p.set_content_uuid(uuid);
  p.set_kind(kind);
  p.set_variant(variant);
  p.set_format(format);
  return p;
}

constexpr char kUuid[] = "550e8400-e29b-41d4-a716-446655440000";

TEST(UuidTest, ParsesAndFormatsCanonically) {
  auto u = Uuid::Parse("550E8400-E29B-41D4-A716-446655440000");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->ToString(), kUuid);
  EXPECT_EQ(u->ToHex(), "550e8400e29b41d4a716446655440000");
  EXPECT_EQ(Uuid::FromBytes(u->AsBytes()).value(), *u);
}

TEST(UuidTest, RejectsMalformed) {
  for (const char* bad : {"", "550e8400e29b41d4a716446655440000",
                          "{550e8400-e29b-41d4-a716-446655440000}",
                          "550e8400-e29b-41d4-a716-44665544000g",
                          "550e8400-e29b-41d4-a716_446655440000"}) {
    EXPECT_EQ(Uuid::Parse(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
  EXPECT_FALSE(Uuid::FromBytes("short").ok());
}

TEST(UuidTest, RandomIsVersion4AndDistinct) {
  Uuid a = Uuid::Random(), b = Uuid::Random();
  EXPECT_NE(a, b);
  EXPECT_EQ(a.bytes[6] >> 4, 4);
  EXPECT_EQ(a.bytes[8] & 0xc0, 0x80);
}

TEST(Sha256Test, KnownVector) {
  EXPECT_EQ(DigestToHex(Sha256Of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.Update("a");
  h.Update("bc");
  EXPECT_EQ(h.Finish(), Sha256Of("abc"));
  auto back = DigestFromHex(DigestToHex(Sha256Of("abc")));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, Sha256Of("abc"));
  EXPECT_FALSE(DigestFromHex("zz").ok());
}

TEST(SidecarKeyTest, PathLayoutMatchesReference) {
  auto key = KeyFromProto(
      Proto(kUuid, v1::SIDECAR_KIND_THUMB, "grid@2x", v1::SIDECAR_FORMAT_WEBP));
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(RelativePath(*key),
            "content/55/0e/550e8400-e29b-41d4-a716-446655440000/thumbs/"
            "grid@2x.webp");
  EXPECT_EQ(FormatSidecarUri(*key),
            "sidecar://550e8400-e29b-41d4-a716-446655440000/thumbs/"
            "grid@2x.webp");
}

TEST(SidecarKeyTest, ExtensionsFollowFormats) {
  auto key = KeyFromProto(
      Proto(kUuid, v1::SIDECAR_KIND_OCR, "text", v1::SIDECAR_FORMAT_TEXT));
  ASSERT_TRUE(key.ok());
  EXPECT_EQ(RelativePath(*key).substr(RelativePath(*key).size() - 12),
            "ocr/text.txt");
  key = KeyFromProto(Proto(kUuid, v1::SIDECAR_KIND_EMBEDDINGS, "clip",
                           v1::SIDECAR_FORMAT_MESSAGEPACK));
  ASSERT_TRUE(key.ok());
  EXPECT_NE(RelativePath(*key).find("embeddings/clip.msgpack"),
            std::string::npos);
  key = KeyFromProto(Proto(kUuid, v1::SIDECAR_KIND_GAUSSIAN_SPLAT, "ply",
                           v1::SIDECAR_FORMAT_PLY));
  ASSERT_TRUE(key.ok());
  EXPECT_NE(RelativePath(*key).find("gaussian_splats/ply.ply"),
            std::string::npos);
}

TEST(SidecarKeyTest, RejectsTraversalAndControlCharacters) {
  const std::string bad_variants[] = {
      "",
      "..",
      "../etc",
      "a/b",
      "a\\b",
      ".hidden",
      "a..b",
      std::string("a\0b", 3),
      "tab\there",
      "del\x7f",
      std::string(65, 'x'),
  };
  for (const std::string& v : bad_variants) {
    auto key = KeyFromProto(
        Proto(kUuid, v1::SIDECAR_KIND_THUMB, v, v1::SIDECAR_FORMAT_WEBP));
    EXPECT_EQ(key.status().code(), absl::StatusCode::kInvalidArgument)
        << "variant accepted: " << v;
  }
  EXPECT_TRUE(KeyFromProto(Proto(kUuid, v1::SIDECAR_KIND_THUMB,
                                 std::string(64, 'x'), v1::SIDECAR_FORMAT_WEBP))
                  .ok());
}

// Found by tests/fuzz (sidecar_key): a URI or batch line with a variant
// that is not UTF-8 was accepted, but a SidecarKey message cannot carry it
// (the service's parser refuses the whole request).
TEST(SidecarKeyTest, VariantMustBeUtf8) {
  for (const char* bad : {
           "\xff",              // never in UTF-8
           "grid\xc3",          // truncated sequence
           "\xc0\xaf",          // overlong '/'
           "\xed\xa0\x80",      // surrogate
           "\xf4\x90\x80\x80",  // above U+10FFFF
           "\x80",              // continuation byte alone
       }) {
    EXPECT_EQ(ValidateVariant(bad).code(), absl::StatusCode::kInvalidArgument)
        << "variant accepted: " << bad;
  }
  EXPECT_EQ(
      ParseSidecarUri("sidecar://550e8400-e29b-41d4-a716-446655440000/thumbs/"
                      "\xff.webp")
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  for (const char* good :
       {"gr\xc3\xb6\xc3\x9f"
        "e",
        "\xe2\x82\xac", "\xf0\x9f\x96\xbc", "\xef\xbf\xbf"}) {
    EXPECT_TRUE(ValidateVariant(good).ok()) << good;
  }
}

TEST(SidecarKeyTest, RejectsUnknownKindFormatAndBadUuid) {
  EXPECT_FALSE(KeyFromProto(Proto(kUuid, v1::SIDECAR_KIND_UNSPECIFIED, "a",
                                  v1::SIDECAR_FORMAT_WEBP))
                   .ok());
  EXPECT_FALSE(KeyFromProto(Proto(kUuid, static_cast<Kind>(99), "a",
                                  v1::SIDECAR_FORMAT_WEBP))
                   .ok());
  EXPECT_FALSE(KeyFromProto(Proto(kUuid, v1::SIDECAR_KIND_THUMB, "a",
                                  static_cast<Format>(42)))
                   .ok());
  auto bad = KeyFromProto(Proto("not-a-uuid", v1::SIDECAR_KIND_THUMB, "a",
                                v1::SIDECAR_FORMAT_WEBP));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("content_uuid"), std::string::npos);
}

TEST(SidecarKeyTest, UriRoundTripAndRejects) {
  auto key = ParseSidecarUri(
      "sidecar://550e8400-e29b-41d4-a716-446655440000/proxies/"
      "proxy_scrub.mp4");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(key->kind, v1::SIDECAR_KIND_PROXY);
  EXPECT_EQ(key->format, v1::SIDECAR_FORMAT_MP4);
  EXPECT_EQ(key->variant, "proxy_scrub");
  EXPECT_EQ(ParseSidecarUri(FormatSidecarUri(*key)).value(), *key);
  for (const char* bad : {
           "http://550e8400-e29b-41d4-a716-446655440000/thumbs/a.webp",
           "sidecar://550e8400-e29b-41d4-a716-446655440000/thumbs/../x.webp",
           "sidecar://550e8400-e29b-41d4-a716-446655440000/thumbs/a/b.webp",
           "sidecar://550e8400-e29b-41d4-a716-446655440000/nope/a.webp",
           "sidecar://550e8400-e29b-41d4-a716-446655440000/thumbs/a.gif",
           "sidecar://550e8400-e29b-41d4-a716-446655440000/thumbs/noext",
           "sidecar://xyz/thumbs/a.webp",
       }) {
    EXPECT_EQ(ParseSidecarUri(bad).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace sidecar
