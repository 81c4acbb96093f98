// PeerServer: the TransferPeer service, what other devices call to read this
// device's READY sidecars (protos/sidecar/v1/transfer.proto).
//
//   ThreadPool pool({.threads = 4});
//   LocalIndex index(availability_address);
//   PeerServer peer(&index, sidecar_root, &pool, {});
//   ServerHost host(listen);
//   host.AddService(&peer);
//
// Rules, for both calls:
//  - a key is validated (KeyFromProto) and its file is always
//    root + "/" + RelativePath(key): never a path from the wire or from the
//    availability service;
//  - only sidecars READY in the LocalIndex are served (NOT_FOUND "... is not
//    ready on this device" otherwise), and only if the file is a regular
//    file (not followed through a final symlink) of the registered size
//    (DATA_LOSS otherwise);
//  - Read puts each chunk's CRC-32C into the message and, when it streams
//    a whole file, the whole file's hash: a mismatch with the registered
//    checksum ends the call with DATA_LOSS instead of the last chunk;
//  - BatchRead hashes every item and answers DATA_LOSS for a mismatch; it
//    packs the items that are ready when a write can start into one message
//    (about batch_message_target_bytes), so packing follows the network:
//    items pile up while a write is in flight.
//
// Disk I/O, hashing and LocalIndex lookups run on the ThreadPool; gRPC
// reactions never block. Destruction order: shut down the server hosting
// this service first, then destroy the ThreadPool (which runs what is left
// of the reactors' tasks; they may still use the LocalIndex), then the
// LocalIndex. This object may go any time after the server is shut down.
#ifndef SIDECAR_SERVICES_TRANSFER_PEER_SERVER_H_
#define SIDECAR_SERVICES_TRANSFER_PEER_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/thread_pool.h"
#include "common/transport.h"
#include "services/transfer/local_index.h"
#include "services/transfer/read_request.h"
#include "sidecar/v1/transfer.grpc.pb.h"

namespace sidecar::transfer {

struct PeerServerOptions {
  // Chunk size of a Read that asks for 0 (clamped to 64 KiB..1 MiB).
  uint32_t default_chunk_bytes = kDefaultChunkBytes;
  // Bound of one BatchRead message. A BatchReadItem carries one whole file,
  // so items larger than this less 64 KiB of headroom are answered
  // FAILED_PRECONDITION ("use Read"). At most kMaxMessageBytes (16 MiB, what
  // both ends accept).
  size_t max_batch_message_bytes = kMaxMessageBytes;
  // Soft target of one BatchRead message: ready items are packed into one
  // message while it stays within this (and max_batch_message_bytes); a
  // message always has at least one item, which may alone be larger.
  size_t batch_message_target_bytes = 1 << 20;
  // Per BatchRead call: items read ahead of the network (being read, read,
  // or in the message being written), and their total bytes (at least one
  // item). The item count should leave room for more than a message's worth
  // of small items, or it bounds the packing.
  int batch_read_ahead = 256;
  size_t batch_read_ahead_bytes = 16 << 20;
  // BatchRead reads consecutive items in groups, one pool task per group:
  // up to this many bytes (at least one item) and this many items.
  size_t batch_read_group_bytes = 256 << 10;
  int batch_read_group_items = 16;
  // A whole-file Read of a sidecar up to this size is also hashed as a
  // whole, to catch a file that rotted on disk before the receiver does.
  // Larger ones are left to the receiver's check, which always happens:
  // hashing every byte twice would halve the serving rate.
  uint64_t verify_whole_file_max_bytes = 64ull << 20;
};

class PeerServer : public v1::TransferPeer::CallbackService {
 public:
  // Does not take ownership; `index` and `pool` must outlive the calls and
  // the pool's tasks (see the destruction order above).
  PeerServer(LocalIndex* index, std::string sidecar_root, ThreadPool* pool,
             PeerServerOptions options = {});
  ~PeerServer() override;

  grpc::ServerWriteReactor<v1::ReadChunk>* Read(
      grpc::CallbackServerContext* ctx, const v1::ReadRequest* req) override;
  grpc::ServerWriteReactor<v1::BatchReadResponse>* BatchRead(
      grpc::CallbackServerContext* ctx,
      const v1::BatchReadRequest* req) override;

  // Largest sidecar BatchRead sends.
  size_t max_batch_item_bytes() const;

 private:
  struct Core;
  class ReadReactor;
  class BatchReactor;

  const std::shared_ptr<const Core> core_;
};

}  // namespace sidecar::transfer

#endif  // SIDECAR_SERVICES_TRANSFER_PEER_SERVER_H_
