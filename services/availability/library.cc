#include "services/availability/library.h"

#include <algorithm>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/sha256.h"
#include "common/status_macros.h"

namespace sidecar::availability {
namespace {

std::string WithContext(const std::string& context, const std::string& body) {
  std::string out = context;
  out.push_back('\0');
  out.append(body);
  return out;
}

absl::Time FromMillis(int64_t ms) { return absl::FromUnixMillis(ms); }

// The order that picks one introduction when a device has several (paired
// through two members, or a founder's own one and a member's): one vouched
// for by another member first, then the earliest, then by signature. Every
// device applies it to what it has seen, so all converge on the same one.
auto IntroRank(const MemberView& v, const v1::MemberRecord& r) {
  bool self_signed = v.admitted_by == v.cert.device_id;
  return std::make_tuple(self_signed, v.admitted_at,
                         r.introduction().signature());
}

bool SameSigned(const v1::Signed& a, const v1::Signed& b) {
  return a.signature() == b.signature() && a.body() == b.body();
}

}  // namespace

Library::Library(const DeviceKey* key, InventoryStore* store, PeerTrust* trust,
                 std::string self_name)
    : key_(key),
      store_(store),
      trust_(trust),
      self_name_(std::move(self_name)),
      self_id_(key->device_id()) {}

v1::Signed Library::SignBody(const std::string& context,
                             const std::string& body) const {
  v1::Signed s;
  s.set_body(body);
  s.set_signature(key_->Sign(WithContext(context, body)));
  return s;
}

absl::Status Library::Load() {
  absl::StatusOr<std::vector<std::string>> stored = store_->LoadMembers();
  if (!stored.ok()) return stored.status();
  std::vector<std::pair<Uuid, std::string>> to_save;
  {
    absl::MutexLock lock(&mu_);
    records_.clear();
    // The database is this device's own: its records were checked when they
    // were accepted (some through pairing, which no signature shows).
    for (const std::string& bytes : *stored) {
      v1::MemberRecord r;
      Record rec;
      if (!r.ParseFromString(bytes) || !ParseRecordLocked(r, &rec).ok()) {
        SC_LOG(WARNING) << "skipping an unreadable library record";
        continue;
      }
      records_[rec.view.cert.device_id] = std::move(rec);
    }
    if (!records_.contains(self_id_)) {
      v1::Introduction intro;
      intro.set_certificate(key_->certificate().der);
      intro.set_name(self_name_);
      intro.set_admitted_by(std::string(self_id_.AsBytes()));
      intro.set_admitted_at_ms(absl::ToUnixMillis(absl::Now()));
      Record rec;
      *rec.proto.mutable_introduction() =
          SignBody(kIntroductionContext, intro.SerializeAsString());
      SC_RETURN_IF_ERROR(ParseRecordLocked(rec.proto, &rec));
      to_save.emplace_back(self_id_, rec.proto.SerializeAsString());
      records_[self_id_] = std::move(rec);
    }
    RefreshLocked();
  }
  for (const auto& [id, bytes] : to_save) {
    SC_RETURN_IF_ERROR(store_->SaveMember(id, bytes));
  }
  return absl::OkStatus();
}

absl::Status Library::ParseRecordLocked(const v1::MemberRecord& r,
                                        Record* out) const {
  v1::Introduction intro;
  if (!r.has_introduction() ||
      !intro.ParseFromString(r.introduction().body())) {
    return absl::InvalidArgumentError("record without a valid introduction");
  }
  absl::StatusOr<DeviceCertificate> cert =
      DeviceCertificate::Parse(intro.certificate());
  if (!cert.ok()) return cert.status();
  absl::StatusOr<Uuid> by = Uuid::FromBytes(intro.admitted_by());
  if (!by.ok()) return by.status();
  if (intro.name().size() > 256) {
    return absl::InvalidArgumentError("member name longer than 256 bytes");
  }
  MemberView v;
  v.cert = *cert;
  v.name = intro.name();
  v.admitted_by = *by;
  v.admitted_at = FromMillis(intro.admitted_at_ms());
  v.peer_address = r.peer_address().substr(0, 256);
  v.transfer_address = r.transfer_address().substr(0, 256);
  if (r.has_removal()) {
    v1::Removal rm;
    if (!rm.ParseFromString(r.removal().body())) {
      return absl::InvalidArgumentError("record with a malformed removal");
    }
    absl::StatusOr<Uuid> dev = Uuid::FromBytes(rm.device_id());
    absl::StatusOr<Uuid> rby = Uuid::FromBytes(rm.removed_by());
    if (!dev.ok() || !rby.ok() || *dev != cert->device_id) {
      return absl::InvalidArgumentError("removal of another device");
    }
    v.removed = true;
    v.removed_by = *rby;
    v.removed_at = FromMillis(rm.removed_at_ms());
  }
  out->proto = r;
  out->view = std::move(v);
  return absl::OkStatus();
}

void Library::ApplyLocked(Record rec, Change* change,
                          std::vector<std::pair<Uuid, std::string>>* to_save) {
  const Uuid id = rec.view.cert.device_id;
  auto it = records_.find(id);
  auto save = [&](const Record& r) {
    to_save->emplace_back(id, r.proto.SerializeAsString());
  };
  if (it == records_.end()) {
    if (!rec.view.removed) change->added.push_back(id);
    save(rec);
    records_.emplace(id, std::move(rec));
    return;
  }
  Record& cur = it->second;
  if (cur.view.removed) {
    // Paired again after the removal: the new introduction wins.
    if (!rec.view.removed && rec.view.admitted_at > cur.view.removed_at) {
      rec.view.peer_address = cur.view.peer_address;
      rec.view.transfer_address = cur.view.transfer_address;
      change->added.push_back(id);
      save(rec);
      cur = std::move(rec);
    }
    return;
  }
  if (rec.view.removed && rec.view.removed_at >= cur.view.admitted_at) {
    // Keep the introduction everyone converged on; add the removal.
    *cur.proto.mutable_removal() = rec.proto.removal();
    cur.view.removed = true;
    cur.view.removed_by = rec.view.removed_by;
    cur.view.removed_at = rec.view.removed_at;
    change->removed.push_back(id);
    save(cur);
    return;
  }
  if (!rec.view.removed &&
      IntroRank(rec.view, rec.proto) < IntroRank(cur.view, cur.proto)) {
    rec.view.peer_address = cur.view.peer_address;
    rec.view.transfer_address = cur.view.transfer_address;
    rec.proto.set_peer_address(cur.proto.peer_address());
    rec.proto.set_transfer_address(cur.proto.transfer_address());
    save(rec);
    cur = std::move(rec);
    return;
  }
  // Address hints from third parties fill only what is unknown.
  if (cur.view.peer_address.empty() && !rec.view.peer_address.empty()) {
    cur.view.peer_address = rec.view.peer_address;
    cur.view.transfer_address = rec.view.transfer_address;
    cur.proto.set_peer_address(rec.view.peer_address);
    cur.proto.set_transfer_address(rec.view.transfer_address);
    save(cur);
  }
}

absl::StatusOr<Library::Change> Library::Merge(
    const std::vector<v1::MemberRecord>& records, size_t* rejected) {
  if (records.size() > kMaxMembers) {
    return absl::ResourceExhaustedError(
        absl::StrCat("at most ", kMaxMembers, " membership records at once"));
  }
  Change change;
  std::vector<std::pair<Uuid, std::string>> to_save;
  size_t bad = 0;
  {
    absl::MutexLock lock(&mu_);
    std::vector<const v1::MemberRecord*> pending;
    for (const v1::MemberRecord& r : records) pending.push_back(&r);
    // Records may vouch for each other in any order: retry those whose
    // signer is not a member yet until no more can be accepted. Each is
    // verified once, when its signer is known, so this stays cheap.
    bool progress = true;
    while (progress && !pending.empty()) {
      progress = false;
      std::vector<const v1::MemberRecord*> later;
      for (const v1::MemberRecord* r : pending) {
        Record rec;
        if (!ParseRecordLocked(*r, &rec).ok()) {
          ++bad;
          continue;
        }
        const Uuid id = rec.view.cert.device_id;
        auto cur = records_.find(id);
        if (cur != records_.end() &&
            SameSigned(cur->second.proto.introduction(), r->introduction()) &&
            cur->second.proto.has_removal() == r->has_removal() &&
            (!r->has_removal() ||
             SameSigned(cur->second.proto.removal(), r->removal()))) {
          continue;  // nothing new
        }
        auto signer = records_.find(rec.view.admitted_by);
        bool signer_ok = signer != records_.end() &&
                         !signer->second.view.removed &&
                         rec.view.admitted_by != id;
        // A device's own introduction counts only for a device that is a
        // member already, with that key (a founder's, relayed): it never
        // makes a stranger a member.
        if (rec.view.admitted_by == id && cur != records_.end() &&
            !cur->second.view.removed &&
            cur->second.view.cert.key_sha256 == rec.view.cert.key_sha256) {
          signer_ok = true;
        }
        if (!signer_ok) {
          later.push_back(r);
          continue;
        }
        const DeviceCertificate& signer_cert = rec.view.admitted_by == id
                                                   ? rec.view.cert
                                                   : signer->second.view.cert;
        if (!VerifySignature(
                signer_cert,
                WithContext(kIntroductionContext, r->introduction().body()),
                r->introduction().signature())) {
          ++bad;
          continue;
        }
        if (rec.view.removed) {
          auto remover = records_.find(rec.view.removed_by);
          if (remover == records_.end() ||
              !VerifySignature(
                  remover->second.view.cert,
                  WithContext(kRemovalContext, r->removal().body()),
                  r->removal().signature())) {
            ++bad;
            continue;
          }
        }
        if (id == self_id_ && rec.view.removed) {
          SC_LOG(WARNING) << "this device was removed from the library by "
                          << rec.view.removed_by.ToString();
        }
        ApplyLocked(std::move(rec), &change, &to_save);
        progress = true;
      }
      pending.swap(later);
    }
    bad += pending.size();
    if (!to_save.empty()) RefreshLocked();
  }
  if (rejected != nullptr) *rejected = bad;
  Publish(change, to_save);
  return change;
}

absl::StatusOr<Library::Change> Library::AcceptInvitation(
    const DeviceCertificate& inviter,
    const std::vector<v1::MemberRecord>& records) {
  if (records.size() > kMaxMembers) {
    return absl::ResourceExhaustedError("too many membership records");
  }
  const v1::MemberRecord* inviter_record = nullptr;
  bool vouched_for_us = false;
  Change change;
  std::vector<std::pair<Uuid, std::string>> to_save;
  {
    absl::MutexLock lock(&mu_);
    for (const v1::MemberRecord& r : records) {
      Record rec;
      if (!ParseRecordLocked(r, &rec).ok()) continue;
      if (rec.view.cert.device_id == inviter.device_id &&
          rec.view.cert.key_sha256 == inviter.key_sha256 && !rec.view.removed) {
        inviter_record = &r;
      }
      if (rec.view.cert.device_id == self_id_ &&
          rec.view.admitted_by == inviter.device_id &&
          VerifySignature(
              inviter,
              WithContext(kIntroductionContext, r.introduction().body()),
              r.introduction().signature())) {
        vouched_for_us = true;
      }
    }
    if (inviter_record == nullptr || !vouched_for_us) {
      return absl::InvalidArgumentError(
          "the inviting device's answer lacks its own record or this "
          "device's introduction");
    }
    // The code proved the inviter's key: take its record as it is.
    Record rec;
    (void)ParseRecordLocked(*inviter_record, &rec);
    const bool self_introduced = rec.view.admitted_by == inviter.device_id;
    const std::string inviter_name = rec.view.name;
    ApplyLocked(std::move(rec), &change, &to_save);
    if (self_introduced) {
      // The inviter founded its library and nobody has vouched for it yet:
      // this device does, so that devices paired later through this one
      // accept the founder (a founder's own introduction convinces nobody).
      v1::Introduction intro;
      intro.set_certificate(inviter.der);
      intro.set_name(inviter_name);
      intro.set_admitted_by(std::string(self_id_.AsBytes()));
      intro.set_admitted_at_ms(absl::ToUnixMillis(absl::Now()));
      Record vouch;
      *vouch.proto.mutable_introduction() =
          SignBody(kIntroductionContext, intro.SerializeAsString());
      if (ParseRecordLocked(vouch.proto, &vouch).ok()) {
        ApplyLocked(std::move(vouch), &change, &to_save);
      }
    }
    RefreshLocked();
  }
  Publish(change, to_save);
  absl::StatusOr<Change> rest = Merge(records);
  if (!rest.ok()) return rest.status();
  for (const Uuid& id : rest->added) change.added.push_back(id);
  for (const Uuid& id : rest->removed) change.removed.push_back(id);
  return change;
}

absl::StatusOr<v1::MemberRecord> Library::Admit(
    const DeviceCertificate& cert, const std::string& name,
    const std::string& peer_address, const std::string& transfer_address) {
  v1::Introduction intro;
  intro.set_certificate(cert.der);
  intro.set_name(name.substr(0, 256));
  intro.set_admitted_by(std::string(self_id_.AsBytes()));
  intro.set_admitted_at_ms(absl::ToUnixMillis(absl::Now()));
  v1::MemberRecord r;
  *r.mutable_introduction() =
      SignBody(kIntroductionContext, intro.SerializeAsString());
  r.set_peer_address(peer_address);
  r.set_transfer_address(transfer_address);
  {
    absl::ReaderMutexLock lock(&mu_);
    if (records_.size() >= kMaxMembers && !records_.contains(cert.device_id)) {
      return absl::FailedPreconditionError(
          absl::StrCat("the library already has ", kMaxMembers, " devices"));
    }
  }
  absl::StatusOr<Change> c = Merge({r});
  if (!c.ok()) return c.status();
  // A device paired again after its removal keeps that removal unless
  // this introduction is later; Admit's time is now, so it is.
  absl::ReaderMutexLock lock(&mu_);
  auto it = records_.find(cert.device_id);
  if (it == records_.end()) return absl::InternalError("admitted record lost");
  return it->second.proto;
}

absl::StatusOr<v1::MemberRecord> Library::Remove(const Uuid& device) {
  if (device == self_id_) {
    return absl::InvalidArgumentError(
        "this device cannot unpair itself; unpair it from another member");
  }
  v1::MemberRecord r;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = records_.find(device);
    if (it == records_.end() || it->second.view.removed) {
      return absl::NotFoundError(absl::StrCat(
          "device ", device.ToString(), " is not a member of this library"));
    }
    r = it->second.proto;
  }
  v1::Removal rm;
  rm.set_device_id(std::string(device.AsBytes()));
  rm.set_removed_by(std::string(self_id_.AsBytes()));
  rm.set_removed_at_ms(absl::ToUnixMillis(absl::Now()));
  *r.mutable_removal() = SignBody(kRemovalContext, rm.SerializeAsString());
  absl::StatusOr<Change> c = Merge({r});
  if (!c.ok()) return c.status();
  if (c->removed.empty()) return absl::InternalError("removal not applied");
  return r;
}

bool Library::NoteAddresses(const Uuid& device, const std::string& peer_address,
                            const std::string& transfer_address) {
  std::vector<std::pair<Uuid, std::string>> to_save;
  {
    absl::MutexLock lock(&mu_);
    auto it = records_.find(device);
    if (it == records_.end()) return false;
    Record& r = it->second;
    if ((peer_address.empty() || r.view.peer_address == peer_address) &&
        (transfer_address.empty() ||
         r.view.transfer_address == transfer_address)) {
      return false;
    }
    if (!peer_address.empty()) r.view.peer_address = peer_address;
    if (!transfer_address.empty()) r.view.transfer_address = transfer_address;
    r.proto.set_peer_address(r.view.peer_address);
    r.proto.set_transfer_address(r.view.transfer_address);
    to_save.emplace_back(device, r.proto.SerializeAsString());
    ++version_;
  }
  Publish({}, to_save);
  return true;
}

void Library::RefreshLocked() {
  std::vector<const Record*> sorted;
  std::vector<DeviceCertificate> members;
  for (const auto& [id, r] : records_) {
    sorted.push_back(&r);
    if (!r.view.removed) members.push_back(r.view.cert);
  }
  std::sort(sorted.begin(), sorted.end(), [](const Record* a, const Record* b) {
    return a->view.cert.device_id < b->view.cert.device_id;
  });
  Sha256 h;
  for (const Record* r : sorted) {
    h.Update(r->proto.introduction().signature());
    h.Update(r->proto.has_removal() ? r->proto.removal().signature() : "-");
  }
  Sha256Digest d = h.Finish();
  digest_.assign(reinterpret_cast<const char*>(d.data()), 8);
  ++version_;
  trust_->Set(members);
}

void Library::Publish(
    const Change& change,
    const std::vector<std::pair<Uuid, std::string>>& to_save) {
  for (const auto& [id, bytes] : to_save) {
    if (absl::Status s = store_->SaveMember(id, bytes); !s.ok()) {
      SC_LOG(WARNING) << "cannot persist the library record of "
                      << id.ToString() << ": " << s;
    }
  }
  for (const Uuid& id : change.added) {
    SC_LOG(INFO) << "library: " << id.ToString() << " is a member";
  }
  for (const Uuid& id : change.removed) {
    SC_LOG(INFO) << "library: " << id.ToString() << " was removed";
  }
  if (listener_ && (change.any() || !to_save.empty())) listener_(change);
}

std::vector<v1::MemberRecord> Library::Records() const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<v1::MemberRecord> out;
  for (const auto& [id, r] : records_) out.push_back(r.proto);
  return out;
}

std::string Library::Digest() const {
  absl::ReaderMutexLock lock(&mu_);
  return digest_;
}

uint64_t Library::version() const {
  absl::ReaderMutexLock lock(&mu_);
  return version_;
}

std::vector<MemberView> Library::List(bool include_removed) const {
  absl::ReaderMutexLock lock(&mu_);
  std::vector<MemberView> out;
  for (const auto& [id, r] : records_) {
    if (include_removed || !r.view.removed) out.push_back(r.view);
  }
  std::sort(out.begin(), out.end(),
            [](const MemberView& a, const MemberView& b) {
              return a.admitted_at < b.admitted_at;
            });
  return out;
}

std::optional<MemberView> Library::Find(const Uuid& device) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = records_.find(device);
  if (it == records_.end()) return std::nullopt;
  return it->second.view;
}

bool Library::IsMember(const Uuid& device) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = records_.find(device);
  return it != records_.end() && !it->second.view.removed;
}

std::optional<DeviceCertificate> Library::MemberCertificate(
    const Uuid& device) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = records_.find(device);
  if (it == records_.end() || it->second.view.removed) return std::nullopt;
  return it->second.view.cert;
}

}  // namespace sidecar::availability
