// A base for in-memory InventoryStore fakes of unit tests: every method
// fails with UNIMPLEMENTED ("not used by this test"), so that a fake
// overrides only what the code under test calls, and a call it did not
// expect fails loudly instead of returning a made-up answer.
#ifndef SIDECAR_TESTS_SUPPORT_UNUSED_INVENTORY_STORE_H_
#define SIDECAR_TESTS_SUPPORT_UNUSED_INVENTORY_STORE_H_

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "services/availability/inventory_store.h"

namespace sidecar::testing {

class UnusedInventoryStore : public availability::InventoryStore {
 public:
  using ChangeRecord = availability::ChangeRecord;
  using DeviceIdentity = availability::DeviceIdentity;
  using KindUsage = availability::KindUsage;
  using LocalRecord = availability::LocalRecord;

  DeviceIdentity identity() const override { return {}; }
  absl::Status LoadAdvertised(
      const std::function<void(const ChangeRecord&)>&) override {
    return Unused();
  }
  absl::Status LoadAdvertisedAfter(
      uint64_t, const std::function<void(const ChangeRecord&)>&) override {
    return Unused();
  }
  absl::StatusOr<std::optional<ChangeRecord>> ChangeAt(uint64_t) override {
    return Unused();
  }
  absl::StatusOr<uint64_t> MaxSeq() override { return Unused(); }
  absl::StatusOr<uint64_t> FloorSeq() override { return Unused(); }
  absl::StatusOr<uint64_t> SeqLoggedBefore(absl::Time) override {
    return Unused();
  }
  absl::StatusOr<uint64_t> CompactRange(uint64_t, uint64_t,
                                        absl::Span<const uint64_t>,
                                        uint64_t) override {
    return Unused();
  }
  absl::Status VacuumChangeLog() override { return Unused(); }
  absl::StatusOr<ApplyResult> Apply(absl::Span<const LocalRecord>,
                                    absl::Span<const SidecarKey>,
                                    absl::Span<const ChangeRecord>) override {
    return Unused();
  }
  absl::StatusOr<std::vector<LocalRecord>> List(
      const std::optional<SidecarKey>&, uint32_t,
      std::optional<v1::SidecarStatus>) override {
    return Unused();
  }
  absl::StatusOr<std::optional<LocalRecord>> Get(const SidecarKey&) override {
    return Unused();
  }
  absl::Status TouchUsed(absl::Span<const SidecarKey>, absl::Time) override {
    return Unused();
  }
  absl::StatusOr<std::vector<KindUsage>> Usage() override { return Unused(); }
  absl::StatusOr<std::vector<LocalRecord>> ListEvictable(std::optional<Kind>,
                                                         uint32_t) override {
    return Unused();
  }
  absl::StatusOr<DeviceIdentity> ResetChangeLog() override { return Unused(); }
  absl::StatusOr<std::vector<std::string>> LoadMembers() override {
    return Unused();
  }
  absl::Status SaveMember(const Uuid&, const std::string&) override {
    return Unused();
  }

 protected:
  static absl::Status Unused() {
    return absl::UnimplementedError("not used by this test");
  }
};

}  // namespace sidecar::testing

#endif  // SIDECAR_TESTS_SUPPORT_UNUSED_INVENTORY_STORE_H_
