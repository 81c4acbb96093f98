// What the fuzz targets share: a check that aborts (so libFuzzer, or the
// replay test, reports the input) and the properties every valid sidecar
// key must have, whichever parser produced it.
#ifndef SIDECAR_TESTS_FUZZ_FUZZ_SUPPORT_H_
#define SIDECAR_TESTS_FUZZ_FUZZ_SUPPORT_H_

#include <cstddef>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "common/sidecar_key.h"

// Aborts with the failed condition when a property does not hold. Unlike
// assert() it is never compiled out.
#define FUZZ_CHECK(cond)                                           \
  do {                                                             \
    if (!(cond)) ::sidecar::fuzz::Fail(__FILE__, __LINE__, #cond); \
  } while (0)

namespace sidecar::fuzz {

[[noreturn]] void Fail(const char* file, int line, const char* what);

// The input as text.
inline absl::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Whether `name` is a safe single path component: not empty, not "." or
// "..", no '/', '\\', NUL or other control character.
bool IsSafeComponent(absl::string_view name);

// Checks that a key a parser accepted is valid and consistent: it converts
// to a proto and back (through its wire form too), formats to a URI and
// back, and its RelativePath is
// "content/.." of six safe components (so it stays under the root: no
// "..", no leading '/', no control characters).
void CheckValidKey(const SidecarKey& key);

}  // namespace sidecar::fuzz

#endif  // SIDECAR_TESTS_FUZZ_FUZZ_SUPPORT_H_
