// PeerService: the peer API of the availability service (peer.proto).
// Exchange answers a digest with what the caller lacks, as a stream written
// through the callback API: each message is encoded when the previous one has
// been sent, so a slow peer costs memory for one message, not the whole set.
#ifndef SIDECAR_SERVICES_AVAILABILITY_PEER_SERVICE_H_
#define SIDECAR_SERVICES_AVAILABILITY_PEER_SERVICE_H_

#include "services/availability/peer_cache.h"
#include "services/availability/peer_directory.h"
#include "sidecar/v1/peer.grpc.pb.h"

namespace sidecar::availability {

class PeerService final
    : public v1::Peer::WithCallbackMethod_Exchange<v1::Peer::Service> {
 public:
  // Pointers must outlive the service.
  PeerService(PeerCache* cache, PeerDirectory* directory);

  grpc::Status Ping(grpc::ServerContext* ctx, const v1::PingRequest* req,
                    v1::PingResponse* resp) override;
  grpc::Status HasKeys(grpc::ServerContext* ctx, const v1::HasKeysRequest* req,
                       v1::HasKeysResponse* resp) override;
  grpc::ServerWriteReactor<v1::ExchangeResponse>* Exchange(
      grpc::CallbackServerContext* ctx,
      const v1::ExchangeRequest* req) override;

 private:
  PeerCache* const cache_;
  PeerDirectory* const directory_;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_PEER_SERVICE_H_
