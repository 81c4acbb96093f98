#include "services/availability/delegation.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/transport.h"
#include "services/availability/library.h"
#include "services/availability/peer_manager.h"

namespace sidecar::availability {

Delegation::Delegation(DelegationOptions options, PeerManager* peers,
                       Library* library)
    : options_(std::move(options)),
      peers_(peers),
      library_(library),
      cache_(options_.ttl, options_.cache_capacity) {}

std::optional<Uuid> Delegation::Preferred() const {
  if (options_.preferred.empty()) return std::nullopt;
  for (const MemberView& m : library_->List(false)) {
    if (m.name == options_.preferred ||
        m.cert.device_id.ToString() == options_.preferred) {
      return m.cert.device_id;
    }
  }
  return std::nullopt;
}

std::optional<KeyAnswers> Delegation::AskDelegates(
    const std::vector<SidecarKey>& keys) {
  std::vector<PeerManager::Delegate> delegates =
      peers_->DelegateCandidates(Preferred());
  if (delegates.size() > options_.max_delegates_tried) {
    delegates.resize(options_.max_delegates_tried);
  }
  v1::PeerWhoHasRequest req;
  *req.mutable_from() = peers_->SelfHello();
  for (const SidecarKey& k : keys) KeyToProto(k, req.add_keys());
  for (const PeerManager::Delegate& d : delegates) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, options_.timeout);
    v1::PeerWhoHasResponse resp;
    grpc::Status s = d.stub->WhoHas(&ctx, req, &resp);
    if (!s.ok()) {
      SC_LOG(DEBUG) << "delegate " << d.device.ToString()
                    << " did not answer WhoHas: " << s.error_message();
      continue;
    }
    absl::StatusOr<KeyAnswers> answers =
        ParseDelegatedAnswer(resp, keys.size(), *library_);
    if (!answers.ok()) {
      SC_LOG(WARNING) << "delegate " << d.device.ToString()
                      << " sent a bad WhoHas answer: "
                      << answers.status().message();
      continue;
    }
    return std::move(*answers);
  }
  return std::nullopt;
}

Delegation::Source Delegation::Lookup(const std::vector<SidecarKey>& keys,
                                      KeyAnswers* answers) {
  answers->assign(keys.size(), {});
  const absl::Time now = absl::Now();
  std::vector<SidecarKey> missing;
  std::vector<size_t> where;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (auto cached = cache_.Get(keys[i], now)) {
      (*answers)[i] = std::move(*cached);
    } else {
      missing.push_back(keys[i]);
      where.push_back(i);
    }
  }
  if (missing.empty()) return Source::kCache;
  Source source = Source::kDelegate;
  std::optional<KeyAnswers> found = AskDelegates(missing);
  if (!found) {
    // No full member answered: the online peers, each about itself.
    std::vector<std::vector<PeerManager::DirectAnswer>> direct;
    peers_->QueryPeers(missing, &direct);
    found.emplace(missing.size());
    bool any = false;
    for (size_t i = 0; i < missing.size(); ++i) {
      for (const auto& a : direct[i]) {
        (*found)[i].push_back({a.device, a.size, a.sha256, ""});
        any = true;
      }
    }
    source = Source::kPeers;
    // Nothing found without a delegate: keep nothing, ask again next time.
    if (!any) return source;
  }
  const absl::Time later = absl::Now();
  for (size_t i = 0; i < missing.size(); ++i) {
    cache_.Put(missing[i], (*found)[i], later);
    (*answers)[where[i]] = std::move((*found)[i]);
  }
  return source;
}

}  // namespace sidecar::availability
