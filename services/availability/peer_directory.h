// PeerDirectory: what the answering side of the peer API needs to know about
// this device and to tell the asking side (PeerManager) about callers.
// Keeps peer_service free of the connection management in peer_manager.
#ifndef SIDECAR_SERVICES_AVAILABILITY_PEER_DIRECTORY_H_
#define SIDECAR_SERVICES_AVAILABILITY_PEER_DIRECTORY_H_

#include "sidecar/v1/peer.pb.h"

namespace sidecar::availability {

class PeerDirectory {
 public:
  virtual ~PeerDirectory() = default;
  // This device's identity and addresses as sent to peers.
  virtual v1::Hello SelfHello() const = 0;
  // A peer called us. `caller_is_ahead`: its digest shows something we lack,
  // so we should pull from it soon.
  virtual void OnInboundHello(const v1::Hello& hello, bool caller_is_ahead) = 0;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_PEER_DIRECTORY_H_
