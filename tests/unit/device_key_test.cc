#include "common/device_key.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/internal/openssl.h"
#include "common/sha256.h"

namespace sidecar {
namespace {

namespace fs = std::filesystem;

using internal::BioPtr;
using internal::PkeyPtr;
using internal::X509Ptr;
template <auto Free>
using Deleter = internal::OpensslDeleter<Free>;
using StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE_free>>;
using StoreCtxPtr =
    std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX_free>>;
using NamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;
using ConstraintsPtr =
    std::unique_ptr<BASIC_CONSTRAINTS, Deleter<BASIC_CONSTRAINTS_free>>;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void WriteFile(const std::string& path, absl::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  ASSERT_TRUE(out.good()) << path;
}

int Mode(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return -1;
  return st.st_mode & 07777;
}

std::string Pem(X509* x) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), x);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

std::string PrivatePem(EVP_PKEY* pkey) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), pkey, nullptr, nullptr, 0, nullptr,
                           nullptr);
  char* data = nullptr;
  long len = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(len));
}

// A self-signed-looking certificate for `subject_key`, signed by
// `signer_key` (md nullptr for Ed25519).
std::string MakeCert(EVP_PKEY* subject_key, EVP_PKEY* signer_key,
                     const EVP_MD* md) {
  X509Ptr x(X509_new());
  X509_set_version(x.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(x.get()), 1);
  X509_NAME* name = X509_get_subject_name(x.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>("test"), -1,
                             -1, 0);
  X509_set_issuer_name(x.get(), name);
  X509_time_adj_ex(X509_getm_notBefore(x.get()), -1, 0, nullptr);
  X509_time_adj_ex(X509_getm_notAfter(x.get()), 1, 0, nullptr);
  X509_set_pubkey(x.get(), subject_key);
  EXPECT_GT(X509_sign(x.get(), signer_key, md), 0);
  return Pem(x.get());
}

PkeyPtr Ed25519() {
  return PkeyPtr(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
}

X509Ptr ParseX509(const std::string& pem) {
  BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  return X509Ptr(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
}

class DeviceKeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "/device_key_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    dir_ = root_ + "/state";  // not there yet: Create makes it
    key_path_ = dir_ + "/" + kDeviceKeyFile;
    cert_path_ = dir_ + "/" + kDeviceCertFile;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  DeviceKey MustCreate(const std::string& dir, absl::string_view name) {
    absl::StatusOr<DeviceKey> key = DeviceKey::Create(dir, name);
    EXPECT_TRUE(key.ok()) << key.status();
    return *std::move(key);
  }

  struct FileState {
    bool exists;
    bool is_dir;
    std::string content;
    int mode;
    bool operator==(const FileState&) const = default;
  };
  static FileState State(const std::string& path) {
    std::error_code ec;
    bool is_dir = fs::is_directory(path, ec);
    return {fs::exists(path, ec), is_dir, is_dir ? "" : ReadFile(path),
            Mode(path)};
  }

  // Load fails with FAILED_PRECONDITION, names `file`, and changes nothing.
  void ExpectLoadFails(const std::string& file) {
    FileState key_before = State(key_path_), cert_before = State(cert_path_);
    std::vector<std::string> names_before = Listing();
    absl::StatusOr<DeviceKey> key = DeviceKey::Load(dir_);
    ASSERT_FALSE(key.ok());
    EXPECT_EQ(key.status().code(), absl::StatusCode::kFailedPrecondition)
        << key.status();
    EXPECT_TRUE(absl::StrContains(key.status().message(), file))
        << key.status();
    EXPECT_TRUE(State(key_path_) == key_before);
    EXPECT_TRUE(State(cert_path_) == cert_before);
    EXPECT_EQ(Listing(), names_before);
  }

  std::vector<std::string> Listing() {
    std::vector<std::string> names;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec))
      names.push_back(e.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

  std::string root_, dir_, key_path_, cert_path_;
};

TEST_F(DeviceKeyTest, CreateThenLoadRoundTrips) {
  DeviceKey made = MustCreate(dir_, "laptop");
  absl::StatusOr<DeviceKey> loaded = DeviceKey::Load(dir_);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->device_id(), made.device_id());
  EXPECT_EQ(loaded->certificate().pem, made.certificate().pem);
  EXPECT_EQ(loaded->certificate().der, made.certificate().der);
  EXPECT_EQ(loaded->certificate().public_key, made.certificate().public_key);
  EXPECT_EQ(loaded->private_key_pem(), made.private_key_pem());
  EXPECT_EQ(ReadFile(cert_path_), made.certificate().pem);
  EXPECT_TRUE(absl::StartsWith(made.private_key_pem(),
                               "-----BEGIN PRIVATE KEY-----\n"));

  const std::string data = "entries to gossip";
  std::string sig = made.Sign(data);
  EXPECT_EQ(sig.size(), 64u);
  EXPECT_TRUE(VerifySignature(loaded->certificate(), data, sig));
  EXPECT_TRUE(VerifySignature(made.certificate(), data, loaded->Sign(data)));
  EXPECT_FALSE(VerifySignature(made.certificate(), "other data", sig));
  std::string bent = sig;
  bent[10] ^= 0x04;
  EXPECT_FALSE(VerifySignature(made.certificate(), data, bent));
  EXPECT_FALSE(VerifySignature(made.certificate(), data, sig.substr(0, 63)));
  EXPECT_FALSE(VerifySignature(made.certificate(), data, ""));

  DeviceKey other = MustCreate(root_ + "/other", "phone");
  EXPECT_FALSE(VerifySignature(made.certificate(), data, other.Sign(data)));
  EXPECT_FALSE(VerifySignature(other.certificate(), data, sig));
}

TEST_F(DeviceKeyTest, DeviceIdDerivesFromThePublicKey) {
  DeviceKey a = MustCreate(dir_, "a");
  DeviceKey b = MustCreate(root_ + "/b", "b");
  const DeviceCertificate& cert = a.certificate();
  ASSERT_EQ(cert.public_key.size(), 32u);
  EXPECT_EQ(cert.key_sha256, Sha256Of(cert.public_key));
  EXPECT_EQ(a.device_id(), DeviceIdForKey(cert.public_key));
  EXPECT_EQ(std::string(a.device_id().AsBytes()),
            std::string(DigestBytes(cert.key_sha256).substr(0, 16)));
  EXPECT_NE(a.device_id(), b.device_id());
  EXPECT_NE(cert.public_key, b.certificate().public_key);
  EXPECT_EQ(DeviceTlsName(a.device_id()),
            a.device_id().ToHex() + ".device.sidecar");
}

TEST_F(DeviceKeyTest, FileAndDirectoryModes) {
  mode_t old = ::umask(022);
  DeviceKey key = MustCreate(dir_ + "/nested", "laptop");
  ::umask(old);
  EXPECT_EQ(Mode(dir_), 0700);
  EXPECT_EQ(Mode(dir_ + "/nested"), 0700);
  EXPECT_EQ(Mode(dir_ + "/nested/" + kDeviceKeyFile), 0600);
  EXPECT_EQ(Mode(dir_ + "/nested/" + kDeviceCertFile), 0644);
}

TEST_F(DeviceKeyTest, CreateLeavesOnlyTheTwoFiles) {
  MustCreate(dir_, "laptop");
  EXPECT_EQ(Listing(),
            (std::vector<std::string>{kDeviceCertFile, kDeviceKeyFile}));
}

TEST_F(DeviceKeyTest, CreateRefusesWhenBothFilesExist) {
  MustCreate(dir_, "laptop");
  FileState key = State(key_path_), cert = State(cert_path_);
  absl::StatusOr<DeviceKey> again = DeviceKey::Create(dir_, "laptop");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists)
      << again.status();
  EXPECT_TRUE(State(key_path_) == key);
  EXPECT_TRUE(State(cert_path_) == cert);
  EXPECT_EQ(Listing(),
            (std::vector<std::string>{kDeviceCertFile, kDeviceKeyFile}));
}

TEST_F(DeviceKeyTest, CreateRefusesWhenEitherFileExists) {
  MustCreate(dir_, "laptop");
  for (const std::string* keep : {&key_path_, &cert_path_}) {
    std::string other_dir =
        root_ + "/only" + std::to_string(keep == &key_path_);
    ASSERT_TRUE(fs::create_directory(other_dir));
    std::string name = fs::path(*keep).filename().string();
    fs::copy_file(*keep, other_dir + "/" + name);
    FileState before = State(other_dir + "/" + name);
    absl::StatusOr<DeviceKey> made = DeviceKey::Create(other_dir, "x");
    ASSERT_FALSE(made.ok()) << name;
    EXPECT_EQ(made.status().code(), absl::StatusCode::kAlreadyExists);
    EXPECT_TRUE(absl::StrContains(made.status().message(), name))
        << made.status();
    EXPECT_TRUE(State(other_dir + "/" + name) == before);
    EXPECT_EQ(std::distance(fs::directory_iterator(other_dir),
                            fs::directory_iterator()),
              1)
        << "Create wrote something next to " << name;
  }
}

TEST_F(DeviceKeyTest, LoadFailsOnMissingKey) {
  MustCreate(dir_, "laptop");
  fs::remove(key_path_);
  ExpectLoadFails(key_path_);
}

TEST_F(DeviceKeyTest, LoadFailsOnMissingCert) {
  MustCreate(dir_, "laptop");
  fs::remove(cert_path_);
  ExpectLoadFails(cert_path_);
}

TEST_F(DeviceKeyTest, LoadFailsOnMissingDirectory) {
  absl::StatusOr<DeviceKey> key = DeviceKey::Load(dir_);
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(key.status().message(), key_path_))
      << key.status();
  EXPECT_FALSE(fs::exists(dir_));
}

TEST_F(DeviceKeyTest, LoadFailsOnWorldReadableKey) {
  MustCreate(dir_, "laptop");
  ASSERT_EQ(::chmod(key_path_.c_str(), 0644), 0);
  ExpectLoadFails(key_path_);
  absl::StatusOr<DeviceKey> key = DeviceKey::Load(dir_);
  EXPECT_TRUE(absl::StrContains(key.status().message(),
                                absl::StrCat("chmod 600 ", key_path_)))
      << key.status();
}

TEST_F(DeviceKeyTest, LoadFailsOnGroupReadableKey) {
  MustCreate(dir_, "laptop");
  ASSERT_EQ(::chmod(key_path_.c_str(), 0640), 0);
  ExpectLoadFails(key_path_);
  EXPECT_TRUE(
      absl::StrContains(DeviceKey::Load(dir_).status().message(), "chmod 600"));
}

TEST_F(DeviceKeyTest, LoadAcceptsOwnerOnlyReadOnlyKey) {
  DeviceKey made = MustCreate(dir_, "laptop");
  ASSERT_EQ(::chmod(key_path_.c_str(), 0400), 0);
  absl::StatusOr<DeviceKey> key = DeviceKey::Load(dir_);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(key->device_id(), made.device_id());
}

TEST_F(DeviceKeyTest, LoadFailsOnCorruptKey) {
  MustCreate(dir_, "laptop");
  WriteFile(key_path_, "this is not a key\n\x01\x02\x03");
  ExpectLoadFails(key_path_);
}

TEST_F(DeviceKeyTest, LoadFailsOnKeyOfAnotherType) {
  MustCreate(dir_, "laptop");
  PkeyPtr ec(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_NE(ec, nullptr);
  WriteFile(key_path_, PrivatePem(ec.get()));
  ExpectLoadFails(key_path_);
  EXPECT_TRUE(absl::StrContains(DeviceKey::Load(dir_).status().message(),
                                "not Ed25519"));
}

TEST_F(DeviceKeyTest, LoadFailsOnTruncatedCert) {
  MustCreate(dir_, "laptop");
  std::string pem = ReadFile(cert_path_);
  WriteFile(cert_path_, pem.substr(0, pem.size() / 2));
  ExpectLoadFails(cert_path_);
}

TEST_F(DeviceKeyTest, LoadFailsOnCertOfAnotherKey) {
  MustCreate(dir_, "laptop");
  DeviceKey other = MustCreate(root_ + "/other", "phone");
  WriteFile(cert_path_, other.certificate().pem);
  ExpectLoadFails(cert_path_);
}

// Tests may run as root, which reads any file whatever its mode; a
// directory in place of the key cannot be read by anyone.
TEST_F(DeviceKeyTest, LoadFailsOnUnreadableKey) {
  MustCreate(dir_, "laptop");
  fs::remove(key_path_);
  ASSERT_TRUE(fs::create_directory(key_path_));
  ASSERT_EQ(::chmod(key_path_.c_str(), 0700), 0);
  ExpectLoadFails(key_path_);
  EXPECT_TRUE(fs::is_empty(key_path_));
}

TEST_F(DeviceKeyTest, LoadOrCreateCreatesThenLoads) {
  EXPECT_TRUE(DeviceKey::Absent(dir_));
  absl::StatusOr<DeviceKey> first = DeviceKey::LoadOrCreate(dir_, "laptop");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_FALSE(DeviceKey::Absent(dir_));
  EXPECT_TRUE(fs::exists(key_path_));
  EXPECT_TRUE(fs::exists(cert_path_));
  absl::StatusOr<DeviceKey> second = DeviceKey::LoadOrCreate(dir_, "laptop");
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->device_id(), first->device_id());
}

TEST_F(DeviceKeyTest, LoadOrCreateCreatesInExistingEmptyDirectory) {
  ASSERT_TRUE(fs::create_directory(dir_));
  EXPECT_TRUE(DeviceKey::Absent(dir_));
  absl::StatusOr<DeviceKey> key = DeviceKey::LoadOrCreate(dir_, "laptop");
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(DeviceKey::Load(dir_)->device_id(), key->device_id());
}

TEST_F(DeviceKeyTest, LoadOrCreateWithOnlyTheCertFails) {
  MustCreate(dir_, "laptop");
  fs::remove(key_path_);
  EXPECT_FALSE(DeviceKey::Absent(dir_));
  FileState cert = State(cert_path_);
  absl::StatusOr<DeviceKey> key = DeviceKey::LoadOrCreate(dir_, "laptop");
  ASSERT_FALSE(key.ok());
  EXPECT_EQ(key.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(key.status().message(), key_path_))
      << key.status();
  EXPECT_FALSE(fs::exists(key_path_));
  EXPECT_TRUE(State(cert_path_) == cert);
}

TEST_F(DeviceKeyTest, MoveTransfersTheKey) {
  DeviceKey a = MustCreate(dir_, "a");
  const Uuid id = a.device_id();
  DeviceKey b(std::move(a));
  EXPECT_EQ(b.device_id(), id);
  EXPECT_TRUE(VerifySignature(b.certificate(), "x", b.Sign("x")));

  DeviceKey c = MustCreate(root_ + "/c", "c");
  c = std::move(b);
  EXPECT_EQ(c.device_id(), id);
  EXPECT_TRUE(VerifySignature(c.certificate(), "y", c.Sign("y")));
}

TEST_F(DeviceKeyTest, CertificateContents) {
  DeviceKey key = MustCreate(dir_, "laptop");
  X509Ptr x = ParseX509(key.certificate().pem);
  ASSERT_NE(x, nullptr);
  EXPECT_EQ(X509_get_version(x.get()), X509_VERSION_3);
  EXPECT_EQ(X509_get_signature_nid(x.get()), NID_ED25519);

  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(x.get()), NID_commonName, cn,
                            sizeof(cn));
  EXPECT_STREQ(cn, "sidecar device laptop");
  EXPECT_EQ(X509_NAME_cmp(X509_get_subject_name(x.get()),
                          X509_get_issuer_name(x.get())),
            0);

  // Subject alternative name: exactly the device's TLS name.
  int crit = -1;
  NamesPtr names(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(x.get(), NID_subject_alt_name, &crit, nullptr)));
  ASSERT_NE(names, nullptr);
  EXPECT_EQ(crit, 0);
  ASSERT_EQ(sk_GENERAL_NAME_num(names.get()), 1);
  const GENERAL_NAME* gen = sk_GENERAL_NAME_value(names.get(), 0);
  ASSERT_EQ(gen->type, GEN_DNS);
  std::string dns(
      reinterpret_cast<const char*>(ASN1_STRING_get0_data(gen->d.dNSName)),
      ASN1_STRING_length(gen->d.dNSName));
  EXPECT_EQ(dns, DeviceTlsName(key.device_id()));

  // basicConstraints critical CA:FALSE; no keyUsage.
  ConstraintsPtr bc(static_cast<BASIC_CONSTRAINTS*>(
      X509_get_ext_d2i(x.get(), NID_basic_constraints, &crit, nullptr)));
  ASSERT_NE(bc, nullptr);
  EXPECT_EQ(crit, 1);
  EXPECT_FALSE(bc->ca);
  EXPECT_EQ(X509_get_ext_by_NID(x.get(), NID_key_usage, -1), -1);

  // Serial: random, so two certificates differ.
  DeviceKey other = MustCreate(root_ + "/other", "laptop");
  X509Ptr y = ParseX509(other.certificate().pem);
  EXPECT_NE(ASN1_INTEGER_cmp(X509_get0_serialNumber(x.get()),
                             X509_get0_serialNumber(y.get())),
            0);

  // Valid from about a day ago for about 100 years.
  time_t now = std::time(nullptr);
  int days = 0, secs = 0;
  ASSERT_EQ(ASN1_TIME_diff(&days, &secs, X509_get0_notBefore(x.get()),
                           X509_get0_notAfter(x.get())),
            1);
  EXPECT_GE(days, 36524 + 1);
  EXPECT_LE(days, 36526 + 1);
  time_t day_ago = now - 86400 + 60, day_and_a_bit_ago = now - 86400 - 60;
  EXPECT_LT(X509_cmp_time(X509_get0_notBefore(x.get()), &day_ago), 0);
  EXPECT_GT(X509_cmp_time(X509_get0_notBefore(x.get()), &day_and_a_bit_ago), 0);
}

TEST_F(DeviceKeyTest, LongAndNonAsciiNamesFitTheCommonName) {
  DeviceKey key = MustCreate(dir_, std::string(200, 'x'));
  X509Ptr x = ParseX509(key.certificate().pem);
  char cn[256] = {};
  X509_NAME_get_text_by_NID(X509_get_subject_name(x.get()), NID_commonName, cn,
                            sizeof(cn));
  EXPECT_EQ(std::string(cn), "sidecar device " + std::string(49, 'x'));

  DeviceKey umlaut = MustCreate(root_ + "/u", "J\xc3\xbcrgen's laptop");
  EXPECT_TRUE(DeviceCertificate::Parse(umlaut.certificate().pem).ok());
  absl::StatusOr<DeviceKey> bad = DeviceKey::Create(root_ + "/bad", "\xff");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(fs::exists(root_ + "/bad/" + kDeviceKeyFile));
}

// Peers pin a device by putting its certificate alone in a trust store and
// verifying the TLS peer's chain against it.
TEST_F(DeviceKeyTest, CertificateIsItsOwnTrustAnchor) {
  DeviceKey key = MustCreate(dir_, "laptop");
  DeviceKey other = MustCreate(root_ + "/other", "phone");
  X509Ptr x = ParseX509(key.certificate().pem);
  X509Ptr y = ParseX509(other.certificate().pem);
  ASSERT_NE(x, nullptr);

  for (int purpose : {0, X509_PURPOSE_SSL_SERVER, X509_PURPOSE_SSL_CLIENT}) {
    StorePtr store(X509_STORE_new());
    ASSERT_EQ(X509_STORE_add_cert(store.get(), x.get()), 1);
    StoreCtxPtr ctx(X509_STORE_CTX_new());
    ASSERT_EQ(X509_STORE_CTX_init(ctx.get(), store.get(), x.get(), nullptr), 1);
    if (purpose != 0) {
      ASSERT_EQ(X509_STORE_CTX_set_purpose(ctx.get(), purpose), 1);
    }
    X509_VERIFY_PARAM* param = X509_STORE_CTX_get0_param(ctx.get());
    std::string host = DeviceTlsName(key.device_id());
    ASSERT_EQ(X509_VERIFY_PARAM_set1_host(param, host.data(), host.size()), 1);
    EXPECT_EQ(X509_verify_cert(ctx.get()), 1)
        << "purpose " << purpose << ": "
        << X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx.get()));

    // Another device's certificate is not accepted by this pin.
    StoreCtxPtr other_ctx(X509_STORE_CTX_new());
    ASSERT_EQ(
        X509_STORE_CTX_init(other_ctx.get(), store.get(), y.get(), nullptr), 1);
    EXPECT_NE(X509_verify_cert(other_ctx.get()), 1);
  }

  // Nor is the right certificate under the wrong name.
  StorePtr store(X509_STORE_new());
  ASSERT_EQ(X509_STORE_add_cert(store.get(), x.get()), 1);
  StoreCtxPtr ctx(X509_STORE_CTX_new());
  ASSERT_EQ(X509_STORE_CTX_init(ctx.get(), store.get(), x.get(), nullptr), 1);
  std::string wrong = DeviceTlsName(other.device_id());
  X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(ctx.get()),
                              wrong.data(), wrong.size());
  EXPECT_NE(X509_verify_cert(ctx.get()), 1);
}

TEST_F(DeviceKeyTest, ParseDerEqualsParsePem) {
  DeviceKey key = MustCreate(dir_, "laptop");
  absl::StatusOr<DeviceCertificate> pem =
      DeviceCertificate::Parse(key.certificate().pem);
  absl::StatusOr<DeviceCertificate> der =
      DeviceCertificate::Parse(key.certificate().der);
  ASSERT_TRUE(pem.ok()) << pem.status();
  ASSERT_TRUE(der.ok()) << der.status();
  for (const DeviceCertificate* c : {&*pem, &*der}) {
    EXPECT_EQ(c->pem, key.certificate().pem);
    EXPECT_EQ(c->der, key.certificate().der);
    EXPECT_EQ(c->public_key, key.certificate().public_key);
    EXPECT_EQ(c->key_sha256, key.certificate().key_sha256);
    EXPECT_EQ(c->device_id, key.device_id());
  }
  EXPECT_NE(key.certificate().der, key.certificate().pem);
}

TEST_F(DeviceKeyTest, ParseRejectsGarbage) {
  DeviceKey key = MustCreate(dir_, "laptop");
  std::string der = key.certificate().der;
  for (const std::string& bad : {
           std::string(),
           std::string("hello"),
           std::string("-----BEGIN CERTIFICATE-----\nAAAA\n"
                       "-----END CERTIFICATE-----\n"),
           der.substr(0, der.size() - 1),
           der + "x",
           key.private_key_pem(),
       }) {
    absl::StatusOr<DeviceCertificate> c = DeviceCertificate::Parse(bad);
    ASSERT_FALSE(c.ok()) << bad;
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST_F(DeviceKeyTest, ParseRejectsRsaCertificate) {
  PkeyPtr rsa(EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", size_t{2048}));
  ASSERT_NE(rsa, nullptr);
  std::string pem = MakeCert(rsa.get(), rsa.get(), EVP_sha256());
  ASSERT_NE(ParseX509(pem), nullptr);  // a valid certificate, just not ours
  absl::StatusOr<DeviceCertificate> c = DeviceCertificate::Parse(pem);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(c.status().message(), "Ed25519")) << c.status();
}

TEST_F(DeviceKeyTest, ParseRejectsEcP256Certificate) {
  PkeyPtr ec(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  ASSERT_NE(ec, nullptr);
  std::string pem = MakeCert(ec.get(), ec.get(), EVP_sha256());
  ASSERT_NE(ParseX509(pem), nullptr);
  absl::StatusOr<DeviceCertificate> c = DeviceCertificate::Parse(pem);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(c.status().message(), "Ed25519")) << c.status();
}

TEST_F(DeviceKeyTest, ParseRejectsCertificateNotSignedByItsKey) {
  PkeyPtr subject = Ed25519(), signer = Ed25519();
  ASSERT_NE(subject, nullptr);
  ASSERT_NE(signer, nullptr);
  std::string pem = MakeCert(subject.get(), signer.get(), nullptr);
  ASSERT_NE(ParseX509(pem), nullptr);
  absl::StatusOr<DeviceCertificate> c = DeviceCertificate::Parse(pem);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);

  // The same construction, signed by its own key, is accepted.
  std::string own = MakeCert(subject.get(), subject.get(), nullptr);
  absl::StatusOr<DeviceCertificate> ok = DeviceCertificate::Parse(own);
  ASSERT_TRUE(ok.ok()) << ok.status();
  size_t len = 32;
  std::string raw(32, '\0');
  ASSERT_EQ(
      EVP_PKEY_get_raw_public_key(
          subject.get(), reinterpret_cast<unsigned char*>(raw.data()), &len),
      1);
  EXPECT_EQ(ok->public_key, raw);
  EXPECT_EQ(ok->device_id, DeviceIdForKey(raw));
}

TEST_F(DeviceKeyTest, ParseRejectsTamperedCertificate) {
  DeviceKey key = MustCreate(dir_, "laptop");
  std::string der = key.certificate().der;
  // Flip a byte inside the signed part (the CN), keeping the DER valid.
  size_t at = der.find("laptop");
  ASSERT_NE(at, std::string::npos);
  der[at] = 'L';
  absl::StatusOr<DeviceCertificate> c = DeviceCertificate::Parse(der);
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DeviceKeyTest, FingerprintFormat) {
  DeviceKey key = MustCreate(dir_, "laptop");
  std::string fp = key.certificate().Fingerprint();
  ASSERT_EQ(fp.size(), 52u + 12u) << fp;
  int hyphens = 0;
  for (size_t i = 0; i < fp.size(); ++i) {
    if (i % 5 == 4) {
      EXPECT_EQ(fp[i], '-') << fp;
      ++hyphens;
    } else {
      EXPECT_TRUE((fp[i] >= 'A' && fp[i] <= 'Z') ||
                  (fp[i] >= '2' && fp[i] <= '7'))
          << fp;
    }
  }
  EXPECT_EQ(hyphens, 12);
  EXPECT_EQ(DeviceKey::Load(dir_)->certificate().Fingerprint(), fp);
  EXPECT_NE(MustCreate(root_ + "/other", "x").certificate().Fingerprint(), fp);
}

// RFC 4648 base32 of bytes 0..31, computed independently with Python.
TEST(DeviceCertificateTest, FingerprintIsBase32OfKeySha256) {
  DeviceCertificate cert;
  for (int i = 0; i < 32; ++i) cert.key_sha256[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(cert.Fingerprint(),
            "AAAQ-EAYE-AUDA-OCAJ-BIFQ-YDIO-B4IB-CEQT-CQKR-MFYY-DENB-WHA5-DYPQ");
}

}  // namespace
}  // namespace sidecar
