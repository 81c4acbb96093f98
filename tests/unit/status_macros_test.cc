// The early-return macros: they return the error, evaluate their argument
// once, and work in functions returning Status and StatusOr.
#include "common/status_macros.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>

namespace sidecar {
namespace {

absl::Status Step(bool ok, int* calls) {
  ++*calls;
  return ok ? absl::OkStatus() : absl::NotFoundError("step failed");
}

absl::Status TwoSteps(bool first_ok, bool second_ok, int* calls) {
  SC_RETURN_IF_ERROR(Step(first_ok, calls));
  SC_RETURN_IF_ERROR(Step(second_ok, calls));
  return absl::OkStatus();
}

TEST(StatusMacrosTest, ReturnIfErrorStopsAtTheFirstError) {
  int calls = 0;
  EXPECT_TRUE(TwoSteps(true, true, &calls).ok());
  EXPECT_EQ(calls, 2);
  calls = 0;
  absl::Status s = TwoSteps(false, true, &calls);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "step failed");
  EXPECT_EQ(calls, 1);  // evaluated once, and not the second step
}

absl::StatusOr<std::unique_ptr<int>> Make(bool ok, int v) {
  if (!ok) return absl::InvalidArgumentError("no value");
  return std::make_unique<int>(v);
}

// A move-only value, declared and assigned; two uses on one line numbers
// apart need distinct temporaries.
absl::StatusOr<int> Sum(bool a_ok, bool b_ok) {
  SC_ASSIGN_OR_RETURN(std::unique_ptr<int> a, Make(a_ok, 2));
  std::unique_ptr<int> b;
  SC_ASSIGN_OR_RETURN(b, Make(b_ok, 3));
  return *a + *b;
}

TEST(StatusMacrosTest, AssignOrReturnTakesTheValueOrReturnsTheStatus) {
  absl::StatusOr<int> ok = Sum(true, true);
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, 5);
  EXPECT_EQ(Sum(false, true).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sum(true, false).status().message(), "no value");
}

}  // namespace
}  // namespace sidecar
