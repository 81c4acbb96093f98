// MemberKeys: who belongs to the library, with the key each member signs
// with. Library implements it; tests and fuzz targets use small fakes.
#ifndef SIDECAR_SERVICES_AVAILABILITY_MEMBER_KEYS_H_
#define SIDECAR_SERVICES_AVAILABILITY_MEMBER_KEYS_H_

#include <optional>

#include "common/device_key.h"
#include "common/uuid.h"

namespace sidecar::availability {

class MemberKeys {
 public:
  virtual ~MemberKeys() = default;
  // Whether `device` is a member now (not removed). Thread-safe; cheaper
  // than MemberCertificate when the key itself is not needed.
  virtual bool IsMember(const Uuid& device) const = 0;
  // The certificate of member `device`, or nullopt if it is not a member
  // (never was, or was removed). Thread-safe.
  virtual std::optional<DeviceCertificate> MemberCertificate(
      const Uuid& device) const = 0;
};

}  // namespace sidecar::availability

#endif  // SIDECAR_SERVICES_AVAILABILITY_MEMBER_KEYS_H_
