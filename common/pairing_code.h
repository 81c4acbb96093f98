// The one-time pairing code and the proofs bound to it.
//
// A code is 80 bits, shown as 16 Crockford base32 characters in groups of
// four ("7KQ2-M9XD-4HTV-B1ZR"): a 40-bit random secret S and a 40-bit tag
// Trunc40(HMAC-SHA256(S, "sidecar-pair-inviter" || inviter key SHA-256)).
//
//  - The joiner connects to the inviter over TLS and checks that the key it
//    sees there matches the tag: a man in the middle with another key is
//    caught before anything secret is sent (without S it cannot make a key
//    that matches, and it never sees S).
//  - The joiner then proves it knows S, bound to both keys (JoinProof); the
//    inviter answers with AcceptProof. Neither proof reveals S, and both
//    name the keys of the TLS session, so neither can be replayed
//    elsewhere.
#ifndef SIDECAR_COMMON_PAIRING_CODE_H_
#define SIDECAR_COMMON_PAIRING_CODE_H_

#include <array>
#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"

namespace sidecar {

struct PairingCode {
  std::array<uint8_t, 5> secret{};
  std::array<uint8_t, 5> tag{};

  // A fresh code for the inviter whose key hashes to `inviter_key_sha256`
  // (secret from OpenSSL's CSPRNG).
  static PairingCode Make(const Sha256Digest& inviter_key_sha256);

  // Parses what a person typed: case-insensitive, hyphens and spaces
  // ignored, Crockford's aliases (O->0, I and L->1). INVALID_ARGUMENT, with
  // a message saying how a code looks, for anything that is not exactly 16
  // code characters.
  static absl::StatusOr<PairingCode> Parse(absl::string_view text);

  // "XXXX-XXXX-XXXX-XXXX".
  std::string ToString() const;

  // Whether the tag matches an inviter with this key: false means the
  // device reached is not the one that made the code (a typo, the wrong
  // address, or a man in the middle).
  bool MatchesInviter(const Sha256Digest& inviter_key_sha256) const;

  // HMAC-SHA256(S, "sidecar-pair-join" || joiner key || inviter key).
  std::string JoinProof(const Sha256Digest& joiner_key_sha256,
                        const Sha256Digest& inviter_key_sha256) const;
  // HMAC-SHA256(S, "sidecar-pair-accept" || inviter key || joiner key).
  std::string AcceptProof(const Sha256Digest& inviter_key_sha256,
                          const Sha256Digest& joiner_key_sha256) const;
};

// Constant-time comparison of two proofs (false if lengths differ).
bool ProofsEqual(absl::string_view a, absl::string_view b);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_PAIRING_CODE_H_
