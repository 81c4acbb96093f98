// OpenSSL helpers shared by common/ (not part of its interface): owning
// pointers for OpenSSL objects, so that error paths cannot leak, and the
// error queue as text.
#ifndef SIDECAR_COMMON_INTERNAL_OPENSSL_H_
#define SIDECAR_COMMON_INTERNAL_OPENSSL_H_

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>

namespace sidecar::internal {

template <auto Free>
struct OpensslDeleter {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, OpensslDeleter<EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, OpensslDeleter<X509_free>>;
using BioPtr = std::unique_ptr<BIO, OpensslDeleter<BIO_free_all>>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, OpensslDeleter<EVP_MD_CTX_free>>;
using BignumPtr = std::unique_ptr<BIGNUM, OpensslDeleter<BN_free>>;
using ExtPtr =
    std::unique_ptr<X509_EXTENSION, OpensslDeleter<X509_EXTENSION_free>>;
using SslCtxPtr = std::unique_ptr<SSL_CTX, OpensslDeleter<SSL_CTX_free>>;
using SslPtr = std::unique_ptr<SSL, OpensslDeleter<SSL_free>>;

// Drains OpenSSL's thread-local error queue into text for a message, so that
// a failure cannot confuse a later, unrelated OpenSSL call (TLS, say).
// `none`: what to say when the queue is empty.
inline std::string OpensslErrors(const char* none = "no detail from OpenSSL") {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? none : out;
}

}  // namespace sidecar::internal

#endif  // SIDECAR_COMMON_INTERNAL_OPENSSL_H_
