// SHA-256 through OpenSSL (uses SHA-NI where the CPU has it).
#ifndef SIDECAR_COMMON_SHA256_H_
#define SIDECAR_COMMON_SHA256_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

typedef struct evp_md_ctx_st EVP_MD_CTX;

namespace sidecar {

using Sha256Digest = std::array<uint8_t, 32>;

// Incremental hasher. Not thread-safe; cheap to move.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&& other) noexcept;
  Sha256& operator=(Sha256&& other) noexcept;
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  // Returns the digest; the hasher is reset and may be reused.
  Sha256Digest Finish();

 private:
  EVP_MD_CTX* ctx_;
};

Sha256Digest Sha256Of(absl::string_view data);
// Hashes a whole file by streaming it. NOT_FOUND if it does not exist.
absl::StatusOr<Sha256Digest> Sha256OfFile(const std::string& path);

std::string DigestToHex(const Sha256Digest& d);
absl::string_view DigestBytes(const Sha256Digest& d);
// Reads 32 raw bytes; other lengths are INVALID_ARGUMENT.
absl::StatusOr<Sha256Digest> DigestFromBytes(absl::string_view raw);
// Parses 64 hex characters.
absl::StatusOr<Sha256Digest> DigestFromHex(absl::string_view hex);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_SHA256_H_
