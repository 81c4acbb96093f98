// A device's identity: an Ed25519 key pair and a self-signed X.509
// certificate, kept in the device's state directory and read by both of its
// services. The device id is derived from the public key, so no other key
// can claim it; peers pin the certificate when they pair.
//
//   absl::StatusOr<DeviceKey> key = DeviceKey::LoadOrCreate(dir, "laptop");
//   if (!key.ok()) { /* message says what to do */ }
//   std::string sig = key->Sign(bytes);
//   VerifySignature(other_cert, bytes, sig);
#ifndef SIDECAR_COMMON_DEVICE_KEY_H_
#define SIDECAR_COMMON_DEVICE_KEY_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/sha256.h"
#include "common/uuid.h"

typedef struct evp_pkey_st EVP_PKEY;

namespace sidecar {

// Files in the state directory.
inline constexpr char kDeviceKeyFile[] = "device.key";   // PKCS#8 PEM, 0600
inline constexpr char kDeviceCertFile[] = "device.crt";  // X.509 PEM, 0644

// The public half, as peers see and pin it.
struct DeviceCertificate {
  std::string pem;          // the self-signed certificate, PEM
  std::string der;          // the same, DER
  std::string public_key;   // raw 32-byte Ed25519 public key
  Sha256Digest key_sha256{};  // SHA-256 of public_key
  Uuid device_id;           // the first 16 bytes of key_sha256

  // Parses a PEM or DER certificate. Only Ed25519 keys are accepted; the
  // certificate must be self-signed by its own key. INVALID_ARGUMENT
  // otherwise. Never trusts anything but the key: names in it are ignored.
  static absl::StatusOr<DeviceCertificate> Parse(absl::string_view pem_or_der);

  // Fingerprint for people: SHA-256 of the public key, 52 base32 chars in
  // groups of four, e.g. "MFRG-GZDF-...". Stable across certificate renewal.
  std::string Fingerprint() const;
};

// The TLS name every device certificate carries as a DNS subject
// alternative name: "<32 hex of the device id>.device.sidecar". Channels to
// a pinned device verify this name.
std::string DeviceTlsName(const Uuid& device_id);

// The device id a raw Ed25519 public key derives.
Uuid DeviceIdForKey(absl::string_view public_key);

class DeviceKey {
 public:
  // Loads kDeviceKeyFile and kDeviceCertFile from `state_dir`. Fails with
  // FAILED_PRECONDITION and a message naming the file and what to do when
  // a file is missing or unreadable, is not a valid PEM Ed25519 key or
  // certificate, the two do not match, or the key file is readable or
  // writable by group or others. Writes nothing.
  static absl::StatusOr<DeviceKey> Load(const std::string& state_dir);

  // Makes a new key pair and a self-signed certificate (subject CN
  // "sidecar device <name>", SAN DeviceTlsName, valid from a day ago for
  // 100 years) and writes both files atomically (temporary file, fsync,
  // rename, directory fsync), the key with mode 0600. Creates `state_dir`
  // with mode 0700 if missing. ALREADY_EXISTS if either file exists.
  static absl::StatusOr<DeviceKey> Create(const std::string& state_dir,
                                          absl::string_view name);

  // Whether `state_dir` holds neither file: a device's first start.
  static bool Absent(const std::string& state_dir);

  // Load when either file exists, else Create.
  static absl::StatusOr<DeviceKey> LoadOrCreate(const std::string& state_dir,
                                                absl::string_view name);

  DeviceKey(DeviceKey&&) noexcept;
  DeviceKey& operator=(DeviceKey&&) noexcept;
  ~DeviceKey();

  const DeviceCertificate& certificate() const { return cert_; }
  const Uuid& device_id() const { return cert_.device_id; }
  // PKCS#8 PEM of the private key, for TLS credentials.
  const std::string& private_key_pem() const { return key_pem_; }

  // Ed25519 signature (64 bytes) of `data`.
  std::string Sign(absl::string_view data) const;

 private:
  DeviceKey() = default;
  DeviceCertificate cert_;
  std::string key_pem_;
  EVP_PKEY* pkey_ = nullptr;
};

// Whether `signature` is an Ed25519 signature of `data` by `cert`'s key.
bool VerifySignature(const DeviceCertificate& cert, absl::string_view data,
                     absl::string_view signature);

}  // namespace sidecar

#endif  // SIDECAR_COMMON_DEVICE_KEY_H_
