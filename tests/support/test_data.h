// Test data shared by the tests and benchmarks: random bytes and random
// sidecar keys.
#ifndef SIDECAR_TESTS_SUPPORT_TEST_DATA_H_
#define SIDECAR_TESTS_SUPPORT_TEST_DATA_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"
#include "common/sidecar_key.h"
#include "common/uuid.h"
#include "sidecar/v1/sidecar.pb.h"

namespace sidecar::testing {

// The whole of the file at `path` ("" if it cannot be read).
inline std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// `n` pseudo-random bytes, the same for the same seed.
inline std::string RandomBytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, n - i));
  }
  return s;
}

// The renditions of every content in the benchmarks' libraries.
inline constexpr const char* kBenchVariants[] = {
    "grid@2x", "grid@1x", "icon@1x", "icon@2x", "detail@1x", "detail@2x"};

// Key i of a benchmark library of thumbnails: six renditions per content
// (kBenchVariants[i % 6]), content ids spread like random UUIDs, the same
// in every run and every benchmark.
inline SidecarKey BenchKey(uint64_t i) {
  Sha256Digest h = Sha256Of(absl::StrCat("content-", i / 6));
  SidecarKey k;
  std::memcpy(k.content.bytes.data(), h.data(), 16);
  k.kind = v1::SIDECAR_KIND_THUMB;
  k.variant = kBenchVariants[i % 6];
  k.format = v1::SIDECAR_FORMAT_WEBP;
  return k;
}

// A key with a new random content id.
inline v1::SidecarKey RandomKeyProto(
    v1::SidecarKind kind = v1::SIDECAR_KIND_THUMB,
    absl::string_view variant = "grid@2x",
    v1::SidecarFormat format = v1::SIDECAR_FORMAT_WEBP) {
  v1::SidecarKey k;
  k.set_content_uuid(Uuid::Random().ToString());
  k.set_kind(kind);
  k.set_variant(std::string(variant));
  k.set_format(format);
  return k;
}

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_TEST_DATA_H_
