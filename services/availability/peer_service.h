// PeerService: the peer API of the availability service (peer.proto).
// Exchange answers a digest with what the caller lacks, as a stream written
// through the callback API: each message is encoded when the previous one has
// been sent, so a slow peer costs memory for one message, not the whole set.
// Planning and encoding run on a pool of background priority
// (thread_priority.h), never on gRPC's threads.
//
// Served on the peer listener only (mutual TLS): every method but Join is
// for members, which the listener checks by key before a handler runs; each
// handler then checks that the Hello names the authenticated device
// (PERMISSION_DENIED otherwise), so a member cannot speak for another.
#ifndef SIDECAR_SERVICES_AVAILABILITY_PEER_SERVICE_H_
#define SIDECAR_SERVICES_AVAILABILITY_PEER_SERVICE_H_

#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/thread_pool.h"
#include "services/availability/library.h"
#include "services/availability/pairing.h"
#include "services/availability/peer_cache.h"
#include "services/availability/peer_directory.h"
#include "sidecar/v1/peer.grpc.pb.h"

namespace sidecar::availability {

struct ExchangePlan;  // peer_service.cc
class Subscription;

class PeerService final
    : public v1::Peer::WithCallbackMethod_Exchange<v1::Peer::Service> {
 public:
  // Pointers must outlive the service; `encoder` (best a pool of one thread
  // at kBackgroundNice) must also outlive the server's shutdown, which waits
  // for the answers its tasks finish.
  PeerService(PeerCache* cache, PeerDirectory* directory, Library* library,
              Pairing* pairing, ThreadPool* encoder);

  grpc::Status Ping(grpc::ServerContext* ctx, const v1::PingRequest* req,
                    v1::PingResponse* resp) override;
  grpc::Status HasKeys(grpc::ServerContext* ctx, const v1::HasKeysRequest* req,
                       v1::HasKeysResponse* resp) override;
  grpc::ServerWriteReactor<v1::ExchangeResponse>* Exchange(
      grpc::CallbackServerContext* ctx,
      const v1::ExchangeRequest* req) override;
  // Holders of each key among every origin known here (a leaf: its own
  // entries only). At most kMaxKeysPerRequest keys.
  grpc::Status WhoHas(grpc::ServerContext* ctx,
                      const v1::PeerWhoHasRequest* req,
                      v1::PeerWhoHasResponse* resp) override;
  grpc::Status SyncMembers(grpc::ServerContext* ctx,
                           const v1::SyncMembersRequest* req,
                           v1::SyncMembersResponse* resp) override;
  grpc::Status Join(grpc::ServerContext* ctx, const v1::JoinRequest* req,
                    v1::JoinResponse* resp) override;

  // Told what each caller's digest says of this device (set before serving).
  void set_self_view_listener(SelfViewListener l) {
    self_view_listener_ = std::move(l);
  }

  // This device runs as a leaf: it offers and relays nothing but its own
  // entries (set before serving).
  void set_leaf(bool leaf) { leaf_ = leaf; }

  // The method any TLS client may call (pairing), for the listener.
  static constexpr char kOpenMethod[] = "/sidecar.v1.Peer/Join";

 private:
  PeerCache* const cache_;
  PeerDirectory* const directory_;
  Library* const library_;
  Pairing* const pairing_;
  ThreadPool* const encoder_;
  SelfViewListener self_view_listener_;
  bool leaf_ = false;

  // What an Exchange from `from`, whose digest (members only) is `digest`,
  // is answered with; `sub`, when not null, is the caller's subscription (a
  // leaf). Runs on the encoder pool.
  ExchangePlan PlanExchange(const v1::Hello& from,
                            const std::vector<DigestEntry>& digest,
                            const Subscription* sub);

  // Logs a caller's refusal of this device's previous answer, once per
  // caller and code (a member that keeps refusing must not fill the log).
  void NoteRefusal(const Uuid& caller, const v1::Refusal& refusal)
      ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  // (caller, code) pairs logged; at most 17 codes per member.
  absl::flat_hash_set<std::pair<Uuid, int>> refusals_logged_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_PEER_SERVICE_H_
