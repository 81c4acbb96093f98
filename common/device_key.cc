#include "common/device_key.h"

#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/internal/openssl.h"
#include "common/status_macros.h"

namespace sidecar {
namespace {

using internal::BignumPtr;
using internal::BioPtr;
using internal::ExtPtr;
using internal::MdCtxPtr;
using internal::OpensslErrors;
using internal::PkeyPtr;
using internal::X509Ptr;

constexpr size_t kEd25519KeySize = 32;
constexpr size_t kEd25519SigSize = 64;
// Far larger than any key or certificate this code writes; stops a wrong
// path (a disk image, say) from being read into memory whole.
constexpr off_t kMaxFileSize = 1 << 20;
// ub-common-name is 64 characters; "sidecar device " takes 15.
constexpr int kMaxNameChars = 64 - 15;

std::string Errno(int err) { return std::strerror(err); }

std::string JoinPath(const std::string& dir, absl::string_view file) {
  if (!dir.empty() && dir.back() == '/') return absl::StrCat(dir, file);
  return absl::StrCat(dir, "/", file);
}

// What to tell a person whose identity files are damaged or missing.
std::string Remedy(const std::string& state_dir) {
  return absl::StrCat(
      "Restore the file from a backup; or, to give this device a new "
      "identity, move ",
      state_dir,
      " aside and start again (the device then gets a new device id and "
      "must be paired again with its peers)");
}

// Closes a file descriptor when it goes out of scope.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  // Closes now, reporting the error (a late write error shows up here).
  int Close() {
    int fd = std::exchange(fd_, -1);
    return fd >= 0 ? ::close(fd) : 0;
  }

 private:
  int fd_;
};

// Takes flock on the state directory: exclusive while creating, shared while
// loading. Both services of a device may start at once on a fresh state
// directory; the lock keeps one from reading a half-made identity or from
// pairing one's key with the other's certificate. Best effort: a file
// system without flock just runs without it.
void LockDir(const Fd& dir, int op) {
  while (::flock(dir.get(), op) != 0 && errno == EINTR) {
  }
}

absl::StatusOr<std::string> ReadAll(int fd, const std::string& path) {
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::FailedPreconditionError(
          absl::StrCat("cannot read ", path, ": ", Errno(errno)));
    }
    if (n == 0) return out;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > static_cast<size_t>(kMaxFileSize)) {
      return absl::FailedPreconditionError(
          absl::StrCat(path, " is larger than ", kMaxFileSize,
                       " bytes, so it is not a device key or certificate"));
    }
  }
}

// Returns 0 or the errno of the failed write.
int WriteAll(int fd, absl::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return 0;
}

// mkdir -p; directories it makes get mode 0700 (the key is secret).
absl::Status MakeDirs(const std::string& path) {
  if (path.empty()) {
    return absl::InvalidArgumentError("the state directory path is empty");
  }
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string prefix = path.substr(0, pos);
    if (::mkdir(prefix.c_str(), 0700) != 0 && errno != EEXIST) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot create the state directory ", prefix, ": ",
                       Errno(errno), "; create it or fix its permissions"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RawPublicKey(const EVP_PKEY* pkey) {
  std::string raw(kEd25519KeySize, '\0');
  size_t len = raw.size();
  if (EVP_PKEY_get_raw_public_key(
          pkey, reinterpret_cast<unsigned char*>(raw.data()), &len) != 1 ||
      len != kEd25519KeySize) {
    return absl::InternalError(
        absl::StrCat("cannot read the public key: ", OpensslErrors()));
  }
  return raw;
}

bool IsEd25519(const EVP_PKEY* pkey) {
  return pkey != nullptr && EVP_PKEY_get_id(pkey) == EVP_PKEY_ED25519;
}

absl::StatusOr<std::string> BioContents(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  if (len <= 0 || data == nullptr) {
    return absl::InternalError("OpenSSL wrote nothing");
  }
  return std::string(data, static_cast<size_t>(len));
}

// Fills a DeviceCertificate from a parsed certificate after checking that it
// is an Ed25519 certificate signed by its own key. Errors are
// INVALID_ARGUMENT without a file name; callers add context.
absl::StatusOr<DeviceCertificate> FromX509(X509* x) {
  EVP_PKEY* pub = X509_get0_pubkey(x);  // owned by x
  if (pub == nullptr) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "the certificate's public key cannot be read");
  }
  if (!IsEd25519(pub)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the certificate's key is ", OBJ_nid2sn(EVP_PKEY_get_id(pub)),
        ", not Ed25519; only sidecar device certificates are accepted"));
  }
  if (X509_get_signature_nid(x) != NID_ED25519 || X509_verify(x, pub) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        "the certificate is not signed by its own key, so it is not a "
        "sidecar device certificate");
  }
  DeviceCertificate cert;
  absl::StatusOr<std::string> raw = RawPublicKey(pub);
  if (!raw.ok()) return raw.status();
  cert.public_key = *std::move(raw);
  cert.key_sha256 = Sha256Of(cert.public_key);
  cert.device_id = DeviceIdForKey(cert.public_key);

  unsigned char* der = nullptr;
  int der_len = i2d_X509(x, &der);
  if (der_len <= 0) {
    return absl::InternalError(
        absl::StrCat("cannot encode the certificate: ", OpensslErrors()));
  }
  cert.der.assign(reinterpret_cast<const char*>(der),
                  static_cast<size_t>(der_len));
  OPENSSL_free(der);

  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || PEM_write_bio_X509(bio.get(), x) != 1) {
    return absl::InternalError(
        absl::StrCat("cannot encode the certificate: ", OpensslErrors()));
  }
  absl::StatusOr<std::string> pem = BioContents(bio.get());
  if (!pem.ok()) return pem.status();
  cert.pem = *std::move(pem);
  return cert;
}

// The certificate subject's name: `name` cut to what a CN may hold, on a
// character boundary (the name is only for people reading the certificate).
absl::StatusOr<std::string> CommonName(absl::string_view name) {
  size_t pos = 0;
  int chars = 0;
  while (pos < name.size() && chars < kMaxNameChars) {
    unsigned long cp;
    int n = UTF8_getc(reinterpret_cast<const unsigned char*>(name.data()) + pos,
                      static_cast<int>(name.size() - pos), &cp);
    if (n <= 0) {
      return absl::InvalidArgumentError(
          "the device name is not valid UTF-8; choose another name");
    }
    pos += static_cast<size_t>(n);
    ++chars;
  }
  return absl::StrCat("sidecar device ", name.substr(0, pos));
}

absl::Status AddExtension(X509* x, int nid, const char* value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x, x, nullptr, nullptr, 0);
  ExtPtr ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
  if (ext == nullptr || X509_add_ext(x, ext.get(), -1) != 1) {
    return absl::InternalError(
        absl::StrCat("cannot add ", OBJ_nid2sn(nid), ": ", OpensslErrors()));
  }
  return absl::OkStatus();
}

// A self-signed certificate for `pkey`. No keyUsage: OpenSSL 1.1.1 and
// LibreSSL do not count a self-signed certificate whose keyUsage lacks
// keyCertSign as self-signed, so a peer pinning it as its only trust anchor
// would reject it. (OpenSSL 3.0 accepts either; peers need not run 3.0.)
absl::StatusOr<X509Ptr> MakeCertificate(EVP_PKEY* pkey,
                                        const std::string& common_name,
                                        const std::string& dns_name) {
  auto fail = [](absl::string_view what) {
    return absl::InternalError(absl::StrCat(
        "cannot make the device certificate (", what, "): ", OpensslErrors()));
  };
  X509Ptr x(X509_new());
  if (x == nullptr) return fail("X509_new");
  if (X509_set_version(x.get(), X509_VERSION_3) != 1) return fail("version");

  // A random serial keeps two certificates of one key (renewal) distinct.
  unsigned char serial[16];
  if (RAND_bytes(serial, sizeof(serial)) != 1) return fail("serial");
  BignumPtr bn(BN_bin2bn(serial, sizeof(serial), nullptr));
  if (bn == nullptr ||
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(x.get())) == nullptr) {
    return fail("serial");
  }

  X509_NAME* subject = X509_get_subject_name(x.get());  // owned by x
  if (X509_NAME_add_entry_by_txt(
          subject, "CN", MBSTRING_UTF8,
          reinterpret_cast<const unsigned char*>(common_name.data()),
          static_cast<int>(common_name.size()), -1, 0) != 1 ||
      X509_set_issuer_name(x.get(), subject) != 1) {
    return fail("name");
  }

  // A day back tolerates peers whose clocks are behind; a century means the
  // certificate never needs renewing (peers pin the key, not the dates).
  if (X509_time_adj_ex(X509_getm_notBefore(x.get()), -1, 0, nullptr) ==
          nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(x.get()), 36525, 0, nullptr) ==
          nullptr) {
    return fail("validity");
  }
  if (X509_set_pubkey(x.get(), pkey) != 1) return fail("public key");

  absl::Status s =
      AddExtension(x.get(), NID_basic_constraints, "critical,CA:FALSE");
  if (!s.ok()) return s;
  s = AddExtension(x.get(), NID_subject_alt_name,
                   absl::StrCat("DNS:", dns_name).c_str());
  if (!s.ok()) return s;

  // Ed25519 signs the message itself: no separate digest.
  if (X509_sign(x.get(), pkey, nullptr) <= 0) return fail("sign");
  return x;
}

absl::StatusOr<std::string> PrivateKeyPem(EVP_PKEY* pkey) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  // PEM_write_bio_PrivateKey writes PKCS#8 ("BEGIN PRIVATE KEY").
  if (bio == nullptr ||
      PEM_write_bio_PrivateKey(bio.get(), pkey, nullptr, nullptr, 0, nullptr,
                               nullptr) != 1) {
    return absl::InternalError(
        absl::StrCat("cannot encode the device key: ", OpensslErrors()));
  }
  return BioContents(bio.get());
}

// Never prompts: an encrypted key file is reported, not asked about on a
// terminal a service does not have.
int NoPassphrase(char*, int, int, void*) { return 0; }

// Writes `data` to `final_path` atomically: temporary file in the same
// directory, fsync, rename. The caller fsyncs the directory afterwards.
absl::Status WriteFileAtomically(const std::string& state_dir,
                                 absl::string_view file_name,
                                 absl::string_view data, mode_t mode) {
  const std::string final_path = JoinPath(state_dir, file_name);
  const std::string tmp_path =
      JoinPath(state_dir, absl::StrCat(".", file_name, ".tmp.",
                                       Uuid::Random().ToHex().substr(0, 12)));
  auto fail = [&](absl::string_view what, int err) {
    ::unlink(tmp_path.c_str());
    return absl::FailedPreconditionError(
        absl::StrCat("cannot write ", final_path, " (", what, " ", tmp_path,
                     ": ", Errno(err), "); check that ", state_dir,
                     " is writable and the disk is not full"));
  };
  // O_EXCL: never follow or reuse something already at the temporary name.
  Fd fd(
      ::open(tmp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (fd.get() < 0) return fail("create", errno);
  // The umask may have removed bits; the modes are part of the contract.
  if (::fchmod(fd.get(), mode) != 0) return fail("chmod", errno);
  if (int err = WriteAll(fd.get(), data); err != 0) return fail("write", err);
  if (::fsync(fd.get()) != 0) return fail("fsync", errno);
  if (fd.Close() != 0) return fail("close", errno);
  if (::rename(tmp_path.c_str(), final_path.c_str()) != 0) {
    return fail("rename", errno);
  }
  return absl::OkStatus();
}

// Opens `path` for reading and checks that it is a regular file.
absl::StatusOr<std::string> ReadIdentityFile(const std::string& path,
                                             absl::string_view what,
                                             const std::string& state_dir,
                                             bool secret) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY));
  if (fd.get() < 0) {
    int err = errno;
    if (err == ENOENT) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the device ", what, " ", path, " is missing. ", Remedy(state_dir)));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot open the device ", what, " ", path, ": ", Errno(err),
        ". Fix its permissions so that this user "
        "can read it, or ",
        Remedy(state_dir)));
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot stat the device ", what, " ", path, ": ", Errno(errno)));
  }
  if (!S_ISREG(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the device ", what, " ", path, " is not a regular file. ",
                     Remedy(state_dir)));
  }
  // Checked before the key is read: a key others could read may already be
  // copied, and the person should decide (ssh does the same).
  if (secret && (st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the device key %s has mode %04o: group or others may read or write "
        "it. Run `chmod 600 %s` (and, if others may have copied it, move %s "
        "aside to make a new identity)",
        path, st.st_mode & 07777, path, state_dir));
  }
  if (st.st_size > kMaxFileSize) {
    return absl::FailedPreconditionError(
        absl::StrCat("the device ", what, " ", path, " is ", st.st_size,
                     " bytes, far too large. ", Remedy(state_dir)));
  }
  return ReadAll(fd.get(), path);
}

}  // namespace

absl::StatusOr<DeviceCertificate> DeviceCertificate::Parse(
    absl::string_view pem_or_der) {
  if (pem_or_der.size() > static_cast<size_t>(kMaxFileSize)) {
    return absl::InvalidArgumentError("too large for a device certificate");
  }
  X509Ptr x;
  if (absl::StartsWith(absl::StripLeadingAsciiWhitespace(pem_or_der),
                       "-----BEGIN")) {
    BioPtr bio(BIO_new_mem_buf(pem_or_der.data(),
                               static_cast<int>(pem_or_der.size())));
    if (bio != nullptr) {
      x.reset(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
    }
  } else {
    const unsigned char* p =
        reinterpret_cast<const unsigned char*>(pem_or_der.data());
    const unsigned char* end = p + pem_or_der.size();
    x.reset(d2i_X509(nullptr, &p, static_cast<long>(pem_or_der.size())));
    // Trailing bytes mean the input is not (only) a certificate.
    if (x != nullptr && p != end) x.reset();
  }
  if (x == nullptr) {
    std::string detail = OpensslErrors();
    return absl::InvalidArgumentError(
        absl::StrCat("not a PEM or DER X.509 certificate (", detail, ")"));
  }
  return FromX509(x.get());
}

std::string DeviceCertificate::Fingerprint() const {
  // RFC 4648 base32 without padding: 256 bits -> 52 characters.
  static constexpr char kBase32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::string chars;
  uint32_t buffer = 0;
  int bits = 0;
  for (uint8_t b : key_sha256) {
    buffer = buffer << 8 | b;
    bits += 8;
    while (bits >= 5) {
      chars.push_back(kBase32[(buffer >> (bits - 5)) & 31]);
      bits -= 5;
    }
  }
  if (bits > 0) chars.push_back(kBase32[(buffer << (5 - bits)) & 31]);
  std::string out;
  for (size_t i = 0; i < chars.size(); ++i) {
    if (i > 0 && i % 4 == 0) out.push_back('-');
    out.push_back(chars[i]);
  }
  return out;
}

std::string DeviceTlsName(const Uuid& device_id) {
  return absl::StrCat(device_id.ToHex(), ".device.sidecar");
}

Uuid DeviceIdForKey(absl::string_view public_key) {
  Sha256Digest d = Sha256Of(public_key);
  // 16 bytes always parse.
  return *Uuid::FromBytes(DigestBytes(d).substr(0, 16));
}

absl::StatusOr<DeviceKey> DeviceKey::Load(const std::string& state_dir) {
  const std::string key_path = JoinPath(state_dir, kDeviceKeyFile);
  const std::string cert_path = JoinPath(state_dir, kDeviceCertFile);

  Fd dir(::open(state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() >= 0) LockDir(dir, LOCK_SH);

  absl::StatusOr<std::string> key_pem =
      ReadIdentityFile(key_path, "key", state_dir, /*secret=*/true);
  if (!key_pem.ok()) return key_pem.status();
  absl::StatusOr<std::string> cert_text =
      ReadIdentityFile(cert_path, "certificate", state_dir, /*secret=*/false);
  if (!cert_text.ok()) return cert_text.status();

  BioPtr bio(
      BIO_new_mem_buf(key_pem->data(), static_cast<int>(key_pem->size())));
  PkeyPtr pkey;
  if (bio != nullptr) {
    pkey.reset(
        PEM_read_bio_PrivateKey(bio.get(), nullptr, NoPassphrase, nullptr));
  }
  if (pkey == nullptr) {
    std::string detail = OpensslErrors();
    return absl::FailedPreconditionError(
        absl::StrCat("the device key ", key_path, " is not a PEM private key (",
                     detail, "). ", Remedy(state_dir)));
  }
  if (!IsEd25519(pkey.get())) {
    return absl::FailedPreconditionError(
        absl::StrCat("the device key ", key_path, " is a ",
                     OBJ_nid2sn(EVP_PKEY_get_id(pkey.get())),
                     " key, not Ed25519. ", Remedy(state_dir)));
  }

  if (!absl::StartsWith(absl::StripLeadingAsciiWhitespace(*cert_text),
                        "-----BEGIN")) {
    return absl::FailedPreconditionError(
        absl::StrCat("the device certificate ", cert_path,
                     " is not a PEM certificate. ", Remedy(state_dir)));
  }
  absl::StatusOr<DeviceCertificate> cert = DeviceCertificate::Parse(*cert_text);
  if (!cert.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the device certificate ", cert_path,
        " is not valid: ", cert.status().message(), ". ", Remedy(state_dir)));
  }

  absl::StatusOr<std::string> raw = RawPublicKey(pkey.get());
  if (!raw.ok()) return raw.status();
  if (*raw != cert->public_key) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the device certificate ", cert_path, " does not belong to the key ",
        key_path,
        " (it was made for another key). Restore both files from the same "
        "backup; or move ",
        state_dir,
        " aside to make a new identity (the device then gets a new device id "
        "and must be paired again)"));
  }

  // Kept as PKCS#8 whatever PEM flavour the file used, as promised.
  absl::StatusOr<std::string> pkcs8 = PrivateKeyPem(pkey.get());
  if (!pkcs8.ok()) return pkcs8.status();

  DeviceKey key;
  key.cert_ = *std::move(cert);
  key.key_pem_ = *std::move(pkcs8);
  key.pkey_ = pkey.release();
  return key;
}

absl::StatusOr<DeviceKey> DeviceKey::Create(const std::string& state_dir,
                                            absl::string_view name) {
  absl::StatusOr<std::string> common_name = CommonName(name);
  if (!common_name.ok()) return common_name.status();
  SC_RETURN_IF_ERROR(MakeDirs(state_dir));
  Fd dir(::open(state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir.get() < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open the state directory ", state_dir, ": ",
                     Errno(errno), "; check its path and permissions"));
  }
  LockDir(dir, LOCK_EX);

  const std::string key_path = JoinPath(state_dir, kDeviceKeyFile);
  const std::string cert_path = JoinPath(state_dir, kDeviceCertFile);
  for (const std::string* path : {&key_path, &cert_path}) {
    struct stat st;
    if (::lstat(path->c_str(), &st) == 0) {
      return absl::AlreadyExistsError(absl::StrCat(
          *path, " already exists: ", state_dir,
          " already holds a device identity. Load it instead; to make a new "
          "identity (and a new device id), move ",
          state_dir, " aside first"));
    }
    if (errno != ENOENT) {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot check ", *path, ": ", Errno(errno),
                       "; fix the permissions of ", state_dir));
    }
  }

  PkeyPtr pkey(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (pkey == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot generate an Ed25519 key: ", OpensslErrors()));
  }
  absl::StatusOr<std::string> raw = RawPublicKey(pkey.get());
  if (!raw.ok()) return raw.status();
  absl::StatusOr<X509Ptr> x509 = MakeCertificate(
      pkey.get(), *common_name, DeviceTlsName(DeviceIdForKey(*raw)));
  if (!x509.ok()) return x509.status();
  absl::StatusOr<DeviceCertificate> cert = FromX509(x509->get());
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key_pem = PrivateKeyPem(pkey.get());
  if (!key_pem.ok()) return key_pem.status();

  // Key first: if the certificate then cannot be written, take the key away
  // again so that the directory is left as it was, not half an identity.
  SC_RETURN_IF_ERROR(
      WriteFileAtomically(state_dir, kDeviceKeyFile, *key_pem, 0600));
  if (absl::Status s =
          WriteFileAtomically(state_dir, kDeviceCertFile, cert->pem, 0644);
      !s.ok()) {
    ::unlink(key_path.c_str());
    return s;
  }
  // Makes the renames durable: without it a crash could lose both names.
  if (::fsync(dir.get()) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot fsync the state directory ", state_dir, ": ", Errno(errno)));
  }

  DeviceKey key;
  key.cert_ = *std::move(cert);
  key.key_pem_ = *std::move(key_pem);
  key.pkey_ = pkey.release();
  return key;
}

bool DeviceKey::Absent(const std::string& state_dir) {
  // Only "does not exist" counts: a file that cannot be checked (no
  // permission) must go to Load, which says what is wrong, rather than
  // being replaced by a new identity.
  for (absl::string_view file : {kDeviceKeyFile, kDeviceCertFile}) {
    struct stat st;
    if (::lstat(JoinPath(state_dir, file).c_str(), &st) == 0 ||
        errno != ENOENT) {
      return false;
    }
  }
  return true;
}

absl::StatusOr<DeviceKey> DeviceKey::LoadOrCreate(const std::string& state_dir,
                                                  absl::string_view name) {
  if (Absent(state_dir)) {
    absl::StatusOr<DeviceKey> made = Create(state_dir, name);
    // ALREADY_EXISTS: the device's other service made it first; use theirs.
    if (made.ok() || made.status().code() != absl::StatusCode::kAlreadyExists) {
      return made;
    }
  }
  return Load(state_dir);
}

DeviceKey::DeviceKey(DeviceKey&& other) noexcept
    : cert_(std::move(other.cert_)),
      key_pem_(std::move(other.key_pem_)),
      pkey_(std::exchange(other.pkey_, nullptr)) {}

DeviceKey& DeviceKey::operator=(DeviceKey&& other) noexcept {
  if (this != &other) {
    EVP_PKEY_free(pkey_);
    pkey_ = std::exchange(other.pkey_, nullptr);
    cert_ = std::move(other.cert_);
    key_pem_ = std::move(other.key_pem_);
  }
  return *this;
}

DeviceKey::~DeviceKey() { EVP_PKEY_free(pkey_); }

std::string DeviceKey::Sign(absl::string_view data) const {
  if (pkey_ == nullptr) return {};  // moved from
  MdCtxPtr ctx(EVP_MD_CTX_new());
  std::string sig(kEd25519SigSize, '\0');
  size_t len = sig.size();
  // Ed25519 hashes internally: md must be NULL, and it is one-shot only.
  if (ctx == nullptr ||
      EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, pkey_) != 1 ||
      EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(sig.data()),
                     &len, reinterpret_cast<const unsigned char*>(data.data()),
                     data.size()) != 1 ||
      len != kEd25519SigSize) {
    // Only an allocation failure gets here; an empty signature never
    // verifies, so callers fail safe.
    ERR_clear_error();
    return {};
  }
  return sig;
}

bool VerifySignature(const DeviceCertificate& cert, absl::string_view data,
                     absl::string_view signature) {
  if (cert.public_key.size() != kEd25519KeySize ||
      signature.size() != kEd25519SigSize) {
    return false;
  }
  PkeyPtr pub(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr,
      reinterpret_cast<const unsigned char*>(cert.public_key.data()),
      cert.public_key.size()));
  MdCtxPtr ctx(EVP_MD_CTX_new());
  bool ok =
      pub != nullptr && ctx != nullptr &&
      EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pub.get()) ==
          1 &&
      EVP_DigestVerify(
          ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()),
          signature.size(), reinterpret_cast<const unsigned char*>(data.data()),
          data.size()) == 1;
  // A bad signature leaves an error queued; drop it (see OpensslErrors).
  if (!ok) ERR_clear_error();
  return ok;
}

}  // namespace sidecar
