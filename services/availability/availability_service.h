// AvailabilityService: the local API (availability.proto) for the application
// on this device and for its transfer service. Unary methods are synchronous
// (they may wait on PostgreSQL); Watch is a callback stream fed by WatchHub.
#ifndef SIDECAR_SERVICES_AVAILABILITY_AVAILABILITY_SERVICE_H_
#define SIDECAR_SERVICES_AVAILABILITY_AVAILABILITY_SERVICE_H_

#include <string>
#include <vector>

#include "services/availability/delegation.h"
#include "services/availability/inventory_store.h"
#include "services/availability/library.h"
#include "services/availability/local_inventory.h"
#include "services/availability/pairing.h"
#include "services/availability/peer_cache.h"
#include "services/availability/peer_manager.h"
#include "services/availability/usage_recorder.h"
#include "services/availability/watch_hub.h"
#include "sidecar/v1/availability.grpc.pb.h"

namespace sidecar::availability {

class AvailabilityService final
    : public v1::Availability::WithCallbackMethod_Watch<
          v1::Availability::Service> {
 public:
  struct Deps {
    InventoryStore* store;
    LocalInventory* inventory;
    PeerCache* cache;
    PeerManager* peers;
    WatchHub* hub;
    std::string sidecar_root;  // absolute or relative to the working dir
    Library* library;
    Pairing* pairing;
    // Where JoinLibrary looks for the inviter when no address is given
    // (the configured --peers).
    std::vector<std::string> join_addresses;
    absl::Duration join_timeout = absl::Seconds(10);
    // Set by --transfer_address: announcements are then ignored.
    bool transfer_address_fixed = false;
    // Records LOCAL answers of Resolve as uses; may be null.
    UsageRecorder* usage = nullptr;
    // A leaf's: asked about holders beyond what this device mirrors (WhoHas,
    // and Resolve without a ready local copy). Null on a full device.
    Delegation* delegation = nullptr;
    // A leaf's bound on mirrored entries (GetDevice); 0 on a full device.
    size_t mirror_budget_entries = 0;
  };
  explicit AvailabilityService(Deps deps);

  grpc::Status GetDevice(grpc::ServerContext*, const v1::GetDeviceRequest*,
                         v1::DeviceInfo*) override;
  grpc::Status Register(grpc::ServerContext*, const v1::RegisterRequest*,
                        v1::RegisterResponse*) override;
  grpc::Status Remove(grpc::ServerContext*, const v1::RemoveRequest*,
                      v1::RemoveResponse*) override;
  grpc::Status GetLocalUsage(grpc::ServerContext*,
                             const v1::GetLocalUsageRequest*,
                             v1::GetLocalUsageResponse*) override;
  grpc::Status ListEvictable(grpc::ServerContext*,
                             const v1::ListEvictableRequest*,
                             v1::ListEvictableResponse*) override;
  grpc::Status ListLocal(grpc::ServerContext*, const v1::ListLocalRequest*,
                         v1::ListLocalResponse*) override;
  grpc::Status ListMissing(grpc::ServerContext*, const v1::ListMissingRequest*,
                           v1::ListMissingResponse*) override;
  // Adds trailing metadata "server-micros": time spent in the handler.
  grpc::Status GetLocal(grpc::ServerContext*, const v1::GetLocalRequest*,
                        v1::GetLocalResponse*) override;
  grpc::Status WhoHas(grpc::ServerContext*, const v1::WhoHasRequest*,
                      v1::WhoHasResponse*) override;
  grpc::Status Resolve(grpc::ServerContext*, const v1::ResolveRequest*,
                       v1::ResolveResponse*) override;
  grpc::Status ResolveBatch(grpc::ServerContext*,
                            const v1::ResolveBatchRequest*,
                            v1::ResolveBatchResponse*) override;
  grpc::ServerWriteReactor<v1::AvailabilityEvent>* Watch(
      grpc::CallbackServerContext*, const v1::WatchRequest*) override;
  grpc::Status ListPeers(grpc::ServerContext*, const v1::ListPeersRequest*,
                         v1::ListPeersResponse*) override;
  grpc::Status ReportTransfer(grpc::ServerContext*,
                              const v1::ReportTransferRequest*,
                              v1::ReportTransferResponse*) override;
  grpc::Status AnnounceTransfer(grpc::ServerContext*,
                                const v1::AnnounceTransferRequest*,
                                v1::AnnounceTransferResponse*) override;
  grpc::Status CreateInvite(grpc::ServerContext*,
                            const v1::CreateInviteRequest*,
                            v1::CreateInviteResponse*) override;
  grpc::Status JoinLibrary(grpc::ServerContext*, const v1::JoinLibraryRequest*,
                           v1::JoinLibraryResponse*) override;
  grpc::Status ListMembers(grpc::ServerContext*, const v1::ListMembersRequest*,
                           v1::ListMembersResponse*) override;
  grpc::Status Unpair(grpc::ServerContext*, const v1::UnpairRequest*,
                      v1::UnpairResponse*) override;

 private:
  void MemberToProto(const MemberView& m, v1::Member* out) const;
  grpc::Status ResolveOne(const v1::ResolveRequest& req,
                          v1::ResolveResponse* resp);
  grpc::Status WhoHasImpl(const v1::WhoHasRequest* req,
                          v1::WhoHasResponse* resp);
  // Whether the file of a READY local entry is present with its size.
  bool LocalFilePresent(const SidecarKey& key, uint64_t size,
                        std::string* path) const;

  Deps d_;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_AVAILABILITY_SERVICE_H_
