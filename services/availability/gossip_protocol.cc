#include "services/availability/gossip_protocol.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "services/availability/generator_version.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {

absl::StatusOr<std::vector<DigestEntry>> DigestFromProto(
    const google::protobuf::RepeatedPtrField<v1::OriginDigest>& proto) {
  if (static_cast<size_t>(proto.size()) > kMaxDigestOrigins) {
    return absl::ResourceExhaustedError(
        absl::StrCat("digest names ", proto.size(), " origins; at most ",
                     kMaxDigestOrigins, " are accepted"));
  }
  std::vector<DigestEntry> out;
  out.reserve(proto.size());
  absl::flat_hash_set<Uuid> seen;
  for (const v1::OriginDigest& d : proto) {
    absl::StatusOr<Uuid> id = Uuid::FromBytes(d.device_id());
    if (!id.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("digest origin: ", id.status().message()));
    }
    if (id->IsNil()) {
      return absl::InvalidArgumentError("digest origin is the nil UUID");
    }
    if (!seen.insert(*id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("digest names origin ", id->ToString(), " twice"));
    }
    if (d.max_seq() > kMaxSeq) {
      return absl::InvalidArgumentError(
          absl::StrCat("digest max_seq ", d.max_seq(), " of origin ",
                       id->ToString(), " is out of range"));
    }
    out.push_back({*id, d.generation(), d.max_seq()});
  }
  return out;
}

void DigestToProto(absl::Span<const DigestEntry> digest,
                   google::protobuf::RepeatedPtrField<v1::OriginDigest>* out) {
  for (const DigestEntry& d : digest) {
    v1::OriginDigest* p = out->Add();
    p->set_device_id(std::string(d.origin.AsBytes()));
    p->set_generation(d.generation);
    p->set_max_seq(d.max_seq);
  }
}

SendPlan PlanSend(const OriginState& local, const DigestEntry* remote) {
  // Generation 0: we only know the origin's address, nothing it advertised.
  if (local.generation == 0) return SendPlan::kNothing;
  // Even an empty snapshot tells the asker the generation, so that it stops
  // seeing us as ahead of it.
  if (remote == nullptr) return SendPlan::kSnapshot;
  if (remote->generation < local.generation) return SendPlan::kSnapshot;
  if (remote->generation > local.generation) return SendPlan::kNothing;
  if (remote->max_seq >= local.max_seq) return SendPlan::kNothing;
  if (remote->max_seq < local.floor_seq) return SendPlan::kSnapshot;
  return SendPlan::kDelta;
}

bool RemoteIsAhead(const OriginState* local, const DigestEntry& remote) {
  if (local == nullptr) return remote.generation > 0;
  if (remote.generation != local->generation) {
    return remote.generation > local->generation;
  }
  return remote.max_seq > local->max_seq;
}

uint32_t ClampMessageBytes(uint32_t requested) {
  if (requested == 0) return kDefaultMessageBytes;
  return std::clamp(requested, kMinMessageBytes, kMaxMessageBytesLimit);
}

size_t EntriesPerMessage(uint32_t max_message_bytes) {
  // Worst case per entry: 16 + 1 + 1 + 3 (variant index) + 6 (size) + 32 +
  // 8 (seq) + 1 + 2 (version index) = 70 bytes; the variant dictionary adds
  // at most 65 bytes per distinct variant, the version dictionary 130 per
  // distinct version. Reserve 4 KiB for headers.
  size_t usable = ClampMessageBytes(max_message_bytes) - 4096;
  return usable / 74;
}

void EncodeEntries(absl::Span<const Entry> entries, v1::EntryBatch* batch) {
  const size_t n = entries.size();
  std::string* uuids = batch->mutable_uuids();
  std::string* kinds = batch->mutable_kinds();
  std::string* formats = batch->mutable_formats();
  std::string* shas = batch->mutable_sha256s();
  std::string* removed = batch->mutable_removed();
  uuids->resize(16 * n);
  kinds->resize(n);
  formats->resize(n);
  shas->resize(32 * n);
  removed->resize(n);
  batch->mutable_sizes()->Reserve(n);
  batch->mutable_seqs()->Reserve(n);
  batch->mutable_variant_index()->Reserve(n);
  absl::flat_hash_map<uint16_t, uint32_t> local_index;
  const VariantDict& dict = VariantDict::Global();
  // The version column only when some entry has a version.
  bool versions = false;
  for (const Entry& e : entries) versions |= e.version() != 0;
  absl::flat_hash_map<uint16_t, uint32_t> version_index;
  if (versions) batch->mutable_version_index()->Reserve(n);
  const GeneratorVersionDict& vdict = GeneratorVersionDict::Global();
  for (size_t i = 0; i < n; ++i) {
    const Entry& e = entries[i];
    std::memcpy(uuids->data() + 16 * i, e.content.bytes.data(), 16);
    std::memcpy(shas->data() + 32 * i, e.sha256.data(), 32);
    (*kinds)[i] = static_cast<char>(e.kind());
    (*formats)[i] = static_cast<char>(e.format());
    (*removed)[i] = e.removed() ? 1 : 0;
    batch->add_sizes(e.size());
    batch->add_seqs(e.seq());
    auto [it, inserted] = local_index.try_emplace(
        e.variant(), static_cast<uint32_t>(batch->variants_size()));
    if (inserted) batch->add_variants(std::string(dict.Name(e.variant())));
    batch->add_variant_index(it->second);
    if (versions) {
      auto [vt, added] = version_index.try_emplace(
          e.version(), static_cast<uint32_t>(batch->generator_versions_size()));
      if (added) {
        batch->add_generator_versions(std::string(vdict.Name(e.version())));
      }
      batch->add_version_index(vt->second);
    }
  }
}

absl::Status DecodeEntries(const v1::EntryBatch& batch, uint64_t max_seq,
                           const Uuid& sender, std::vector<Entry>* out) {
  const size_t n = batch.kinds().size();
  auto bad = [](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed entry batch: ", why));
  };
  if (batch.uuids().size() != 16 * n || batch.formats().size() != n ||
      batch.sha256s().size() != 32 * n || batch.removed().size() != n ||
      static_cast<size_t>(batch.sizes_size()) != n ||
      static_cast<size_t>(batch.seqs_size()) != n ||
      static_cast<size_t>(batch.variant_index_size()) != n ||
      (batch.version_index_size() != 0 &&
       static_cast<size_t>(batch.version_index_size()) != n)) {
    return bad("column lengths disagree");
  }
  if (static_cast<size_t>(batch.variants_size()) > kMaxBatchVariants) {
    return absl::ResourceExhaustedError(
        absl::StrCat("entry batch names ", batch.variants_size(),
                     " variants; at most ", kMaxBatchVariants));
  }
  std::vector<uint16_t> variant_ids;
  variant_ids.reserve(batch.variants_size());
  for (const std::string& v : batch.variants()) {
    if (absl::Status s = ValidateVariant(v); !s.ok()) return bad(s.message());
    absl::StatusOr<uint16_t> id =
        VariantDict::Global().InternFromPeer(v, sender);
    if (!id.ok()) return id.status();
    variant_ids.push_back(*id);
  }
  if (static_cast<size_t>(batch.generator_versions_size()) >
      kMaxBatchVersions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("entry batch names ", batch.generator_versions_size(),
                     " generator versions; at most ", kMaxBatchVersions));
  }
  // Every version is checked before any is added, so that a bad batch adds
  // nothing to the dictionary.
  for (const std::string& v : batch.generator_versions()) {
    if (absl::Status s = ValidateGeneratorVersion(v); !s.ok()) {
      return bad(s.message());
    }
  }
  std::vector<uint16_t> version_ids;
  version_ids.reserve(batch.generator_versions_size());
  for (const std::string& v : batch.generator_versions()) {
    absl::StatusOr<uint16_t> id =
        GeneratorVersionDict::Global().InternFromPeer(v, sender);
    if (!id.ok()) return id.status();
    version_ids.push_back(*id);
  }
  const bool has_versions = batch.version_index_size() != 0;
  // No reserve here: growing geometrically keeps many appends linear.
  const size_t start = out->size();
  const char* uuids = batch.uuids().data();
  const char* shas = batch.sha256s().data();
  for (size_t i = 0; i < n; ++i) {
    uint8_t kind = static_cast<uint8_t>(batch.kinds()[i]);
    uint8_t format = static_cast<uint8_t>(batch.formats()[i]);
    uint8_t removed = static_cast<uint8_t>(batch.removed()[i]);
    uint32_t vi = batch.variant_index(i);
    uint64_t size = batch.sizes(i);
    uint64_t seq = batch.seqs(i);
    absl::Status s;
    if (kind == 0 || !v1::SidecarKind_IsValid(kind)) {
      s = bad(absl::StrCat("entry ", i, " has unknown kind ", kind));
    } else if (format == 0 || !v1::SidecarFormat_IsValid(format)) {
      s = bad(absl::StrCat("entry ", i, " has unknown format ", format));
    } else if (vi >= variant_ids.size()) {
      s = bad(absl::StrCat("entry ", i, " names variant ", vi,
                           " outside the dictionary"));
    } else if (size > kMaxEntrySize) {
      s = bad(absl::StrCat("entry ", i, " size ", size, " exceeds 1 TiB"));
    } else if (seq == 0 || seq > max_seq) {
      s = bad(absl::StrCat("entry ", i, " seq ", seq, " outside 1..", max_seq));
    } else if (removed > 1) {
      s = bad(absl::StrCat("entry ", i, " has removed flag ", removed));
    } else if (has_versions && batch.version_index(i) >= version_ids.size()) {
      s = bad(absl::StrCat("entry ", i, " names generator version ",
                           batch.version_index(i), " outside the dictionary"));
    }
    if (!s.ok()) {
      out->resize(start);
      return s;
    }
    Entry e;
    std::memcpy(e.content.bytes.data(), uuids + 16 * i, 16);
    std::memcpy(e.sha256.data(), shas + 32 * i, 32);
    e = Entry::Make(e.content, static_cast<Kind>(kind),
                    static_cast<Format>(format), variant_ids[vi], size,
                    e.sha256, seq, removed == 1,
                    has_versions ? version_ids[batch.version_index(i)] : 0);
    out->push_back(e);
  }
  return absl::OkStatus();
}

OriginInfo OriginInfoFromProto(const v1::OriginInfo& proto, const Uuid& id) {
  OriginInfo info;
  info.device_id = id;
  // Addresses are dialed: only well-formed ones are kept. Names are only
  // shown; cap them so a peer cannot bloat the cache.
  if (IsDialableAddress(proto.peer_address())) {
    info.peer_address = proto.peer_address();
  }
  if (IsDialableAddress(proto.transfer_address())) {
    info.transfer_address = proto.transfer_address();
  }
  info.name = proto.name().substr(0, 128);
  if (proto.generation_signature().size() == 64) {
    info.generation_signature = proto.generation_signature();
  }
  return info;
}

absl::StatusCode RefusalCode(int32_t wire_code) {
  constexpr int32_t kLastCode =
      static_cast<int32_t>(absl::StatusCode::kUnauthenticated);
  return wire_code > 0 && wire_code <= kLastCode
             ? static_cast<absl::StatusCode>(wire_code)
             : absl::StatusCode::kUnknown;
}

std::string GenerationStatement(const Uuid& origin, uint64_t generation) {
  std::string out(kGenerationContext);
  absl::string_view id = origin.AsBytes();
  out.append(id.data(), id.size());
  AppendBigEndian(generation, &out);
  return out;
}

std::string HeadStatement(const Uuid& origin, const SignedHead& head) {
  std::string out(kHeadContext);
  absl::string_view id = origin.AsBytes();
  out.append(id.data(), id.size());
  AppendBigEndian(head.generation, &out);
  AppendBigEndian(head.max_seq, &out);
  absl::string_view state = DigestBytes(head.state);
  out.append(state.data(), state.size());
  return out;
}

std::optional<SignedHead> HeadFromProto(const v1::OriginInfo& proto) {
  if (!proto.has_head()) return std::nullopt;
  const v1::Head& h = proto.head();
  absl::StatusOr<Sha256Digest> state = DigestFromBytes(h.state());
  if (!state.ok() || h.signature().size() != 64 || h.max_seq() > kMaxSeq) {
    return std::nullopt;
  }
  return SignedHead{h.generation(), h.max_seq(), *state, h.signature()};
}

void HeadToProto(const SignedHead& head, v1::OriginInfo* proto) {
  v1::Head* h = proto->mutable_head();
  h->set_generation(head.generation);
  h->set_max_seq(head.max_seq);
  h->set_state(std::string(DigestBytes(head.state)));
  h->set_signature(head.signature);
}

bool IsDialableAddress(absl::string_view address) {
  if (address.empty() || address.size() > 256) return false;
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  absl::string_view host = address.substr(0, colon);
  absl::string_view port = address.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (p == 0 || p > 65535) return false;
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    for (char c : host.substr(1, host.size() - 2)) {
      if (!absl::ascii_isxdigit(c) && c != ':' && c != '.') return false;
    }
    return true;
  }
  for (char c : host) {
    if (!absl::ascii_isalnum(c) && c != '.' && c != '-' && c != '_') {
      return false;
    }
  }
  return true;
}

void OriginInfoToProto(const OriginInfo& info, uint64_t generation,
                       v1::OriginInfo* proto) {
  proto->set_device_id(std::string(info.device_id.AsBytes()));
  proto->set_generation(generation);
  proto->set_peer_address(info.peer_address);
  proto->set_transfer_address(info.transfer_address);
  proto->set_name(info.name);
  if (!info.generation_signature.empty()) {
    proto->set_generation_signature(info.generation_signature);
  }
}

absl::Status ValidateHello(const v1::Hello& hello) {
  absl::StatusOr<Uuid> id = Uuid::FromBytes(hello.device_id());
  if (!id.ok() || id->IsNil()) {
    return absl::InvalidArgumentError(
        "hello.device_id must be the caller's 16-byte device id");
  }
  if (hello.peer_address().size() > 256 ||
      hello.transfer_address().size() > 256 || hello.name().size() > 128) {
    return absl::InvalidArgumentError(
        "hello addresses must be at most 256 bytes and the name 128");
  }
  for (const std::string* a :
       {&hello.peer_address(), &hello.transfer_address()}) {
    if (!a->empty() && !IsDialableAddress(*a)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "hello address \"", absl::CHexEscape(*a), "\" is not host:port"));
    }
  }
  return absl::OkStatus();
}

}  // namespace sidecar::availability
