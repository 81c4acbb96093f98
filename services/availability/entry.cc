#include "services/availability/entry.h"

#include "services/availability/generator_version.h"
#include "services/availability/variant_dict.h"

namespace sidecar::availability {

absl::StatusOr<EntryKey> ToEntryKey(const SidecarKey& key) {
  absl::StatusOr<uint16_t> v = VariantDict::Global().Intern(key.variant);
  if (!v.ok()) return v.status();
  return EntryKey{key.content, static_cast<uint8_t>(key.kind),
                  static_cast<uint8_t>(key.format), *v};
}

std::optional<EntryKey> FindEntryKey(const SidecarKey& key) {
  std::optional<uint16_t> v = VariantDict::Global().Find(key.variant);
  if (!v) return std::nullopt;
  return EntryKey{key.content, static_cast<uint8_t>(key.kind),
                  static_cast<uint8_t>(key.format), *v};
}

SidecarKey KeyOf(const EntryKey& k) {
  SidecarKey key;
  key.content = k.content;
  key.kind = static_cast<Kind>(k.kind);
  key.format = static_cast<Format>(k.format);
  key.variant = std::string(VariantDict::Global().Name(k.variant));
  return key;
}

SidecarKey KeyOf(const Entry& e) { return KeyOf(EntryKey::Of(e)); }

absl::string_view GeneratorVersionOf(const Entry& e) {
  return GeneratorVersionDict::Global().Name(e.version());
}

}  // namespace sidecar::availability
