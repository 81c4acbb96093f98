#include "services/availability/state_hash.h"

#include <algorithm>
#include <cstring>

#include "services/availability/generator_version.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {
namespace {

constexpr uint32_t kBuckets = uint32_t{1} << kStateHashBucketBits;
// v2: leaves end with the generator version.
constexpr char kStateContext[] = "sidecar-sync state v2";

uint32_t BucketOf(const Uuid& content) {
  uint32_t top = uint32_t{content.bytes[0]} << 8 | content.bytes[1];
  return top >> (16 - kStateHashBucketBits);
}

// Appends the canonical bytes of one live entry.
void AppendLeaf(const Entry& e, std::string* out) {
  absl::string_view id = e.content.AsBytes();
  out->append(id.data(), id.size());
  out->push_back(static_cast<char>(e.kind()));
  out->push_back(static_cast<char>(e.format()));
  absl::string_view name = VariantDict::Global().Name(e.variant());
  out->push_back(static_cast<char>(name.size()));  // names are < 256 bytes
  out->append(name.data(), name.size());
  AppendBigEndian(e.size(), out);
  out->append(reinterpret_cast<const char*>(e.sha256.data()), e.sha256.size());
  absl::string_view version = GeneratorVersionDict::Global().Name(e.version());
  out->push_back(static_cast<char>(version.size()));  // at most 128 bytes
  out->append(version.data(), version.size());
}

// The entries of `bucket`, as [first, last) into `entries`.
std::pair<size_t, size_t> BucketRange(const Entries& entries, uint32_t bucket) {
  auto below = [](const Entry& e, uint32_t b) {
    return BucketOf(e.content) < b;
  };
  auto first = std::lower_bound(entries.begin(), entries.end(), bucket, below);
  auto last = std::lower_bound(first, entries.end(), bucket + 1, below);
  return {static_cast<size_t>(first - entries.begin()),
          static_cast<size_t>(last - entries.begin())};
}

// The digest of the live entries in [first, last). Entries are in cache
// order (content, kind, format, variant id); entries that differ only in
// variant are put in name order, which is the same on every device.
Sha256Digest BucketDigest(const Entries& entries, size_t first, size_t last,
                          std::string* scratch) {
  // Most buckets of a small table are empty: their digest is a constant.
  static const Sha256Digest kEmpty = Sha256Of("");
  if (first == last) return kEmpty;
  scratch->clear();
  std::vector<const Entry*> group;
  for (size_t i = first; i < last;) {
    size_t j = i + 1;
    while (j < last && entries[j].content == entries[i].content &&
           entries[j].kind() == entries[i].kind() &&
           entries[j].format() == entries[i].format()) {
      ++j;
    }
    group.clear();
    for (size_t k = i; k < j; ++k) {
      if (!entries[k].removed()) group.push_back(&entries[k]);
    }
    if (group.size() > 1) {
      const VariantDict& dict = VariantDict::Global();
      std::sort(group.begin(), group.end(),
                [&](const Entry* a, const Entry* b) {
                  return dict.Name(a->variant()) < dict.Name(b->variant());
                });
    }
    for (const Entry* e : group) AppendLeaf(*e, scratch);
    i = j;
  }
  return Sha256Of(*scratch);
}

Sha256Digest Root(const std::vector<Sha256Digest>& buckets) {
  Sha256 h;
  h.Update(kStateContext);
  for (const Sha256Digest& d : buckets) h.Update(DigestBytes(d));
  return h.Finish();
}

}  // namespace

void AppendBigEndian(uint64_t v, std::string* out) {
  for (int shift = 56; shift >= 0; shift -= 8) {
    out->push_back(static_cast<char>((v >> shift) & 0xff));
  }
}

Sha256Digest StateHashOf(const Entries& entries) {
  StateHasher h;
  return h.Compute(entries);
}

StateHasher::StateHasher() : touched_(kBuckets, false) {}

void StateHasher::Touch(const Uuid& content) {
  touched_[BucketOf(content)] = true;
}

void StateHasher::TouchAll() {
  buckets_.clear();
  touched_.assign(kBuckets, false);
  ++epoch_;
}

Sha256Digest StateHasher::Compute(const Entries& entries) {
  std::string scratch;
  if (buckets_.empty()) {
    buckets_.resize(kBuckets);
    size_t first = 0;
    for (uint32_t b = 0; b < kBuckets; ++b) {
      size_t last = first;
      while (last < entries.size() && BucketOf(entries[last].content) == b) {
        ++last;
      }
      buckets_[b] = BucketDigest(entries, first, last, &scratch);
      first = last;
    }
  } else {
    for (uint32_t b = 0; b < kBuckets; ++b) {
      if (!touched_[b]) continue;
      auto [first, last] = BucketRange(entries, b);
      buckets_[b] = BucketDigest(entries, first, last, &scratch);
    }
  }
  touched_.assign(kBuckets, false);
  return Root(buckets_);
}

StateHasher StateHasher::Fork() {
  StateHasher fork = *this;
  touched_.assign(kBuckets, false);
  return fork;
}

void StateHasher::Adopt(const StateHasher& computed) {
  if (computed.epoch_ != epoch_ || computed.buckets_.empty()) return;
  buckets_ = computed.buckets_;
}

}  // namespace sidecar::availability
