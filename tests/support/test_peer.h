// TestPeer: a made-up device in the test process, with its own key, that
// calls the peer APIs of real services as another device would: as a
// stranger, or after pairing itself into a library with the real protocol
// (a code from the device's CreateInvite, its key checked against the code,
// Peer.Join with the proof). For tests of what a peer may and may not do.
#ifndef SIDECAR_TESTS_SUPPORT_TEST_PEER_H_
#define SIDECAR_TESTS_SUPPORT_TEST_PEER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/device_key.h"
#include "sidecar/v1/peer.grpc.pb.h"
#include "sidecar/v1/transfer.grpc.pb.h"
#include "tests/support/availability_process.h"

namespace sidecar::testing {

class TestPeer {
 public:
  // Makes a key in `dir`/`name`.
  static absl::StatusOr<std::unique_ptr<TestPeer>> Create(
      const std::string& dir, const std::string& name);

  const DeviceKey& key() const { return key_; }
  const std::string& name() const { return name_; }
  // A Hello naming this peer (its device id).
  v1::Hello Hello() const;

  // Joins the library of `device` (which must be running) with a fresh
  // invite of its own.
  absl::Status JoinLibraryOf(AvailabilityProcess* device);

  // Stubs to `device`'s peer listeners, pinned to its certificate. Whether
  // calls are let in depends on this peer's membership.
  absl::StatusOr<std::unique_ptr<v1::Peer::Stub>> PeerStub(
      AvailabilityProcess* device) const;
  absl::StatusOr<std::unique_ptr<v1::TransferPeer::Stub>> TransferStub(
      AvailabilityProcess* device, const std::string& transfer_address) const;

 private:
  TestPeer(DeviceKey key, std::string name)
      : key_(std::move(key)), name_(std::move(name)) {}
  DeviceKey key_;
  std::string name_;
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_TEST_PEER_H_
