// PeerTls: keys and a trusted set for an in-process peer server and its
// client, so that tests and benchmarks of a peer service run over the same
// mutual TLS as the product: the server is a device, the client a member.
#ifndef SIDECAR_TESTS_SUPPORT_PEER_TLS_H_
#define SIDECAR_TESTS_SUPPORT_PEER_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/device_key.h"
#include "common/peer_trust.h"
#include "common/transport.h"

namespace sidecar::testing {

struct PeerTls {
  DeviceKey server;
  DeviceKey client;
  PeerTrust trust;  // the client

  // Makes both keys under `dir`.
  static absl::StatusOr<std::unique_ptr<PeerTls>> Make(const std::string& dir) {
    absl::StatusOr<DeviceKey> s = DeviceKey::Create(dir + "/server", "server");
    if (!s.ok()) return s.status();
    absl::StatusOr<DeviceKey> c = DeviceKey::Create(dir + "/client", "client");
    if (!c.ok()) return c.status();
    auto p = std::unique_ptr<PeerTls>(
        new PeerTls{std::move(*s), std::move(*c), {}});
    p->trust.Set({p->client.certificate()});
    return p;
  }

  // The server's peer listener on a loopback port.
  PeerListener Listener() const {
    return PeerListener{"127.0.0.1:0", &server, &trust, {}};
  }
  // The client's channel to the server listening on `port`.
  std::shared_ptr<grpc::Channel> Channel(int port) const {
    return MakePeerChannel(absl::StrCat("127.0.0.1:", port), client,
                           server.certificate());
  }
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_PEER_TLS_H_
