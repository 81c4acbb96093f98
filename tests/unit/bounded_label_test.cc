// BoundedLabel (common/metrics.h): peers' ids as label values, at most
// `max` of their own.
#include <string>

#include "common/metrics.h"
#include "gtest/gtest.h"

namespace sidecar {
namespace {

TEST(BoundedLabelTest, TheFirstMaxValuesKeepTheirOwnTheRestShareOther) {
  BoundedLabel labels(3);
  EXPECT_EQ(labels.Of("a"), "a");
  EXPECT_EQ(labels.Of("b"), "b");
  EXPECT_EQ(labels.Of("a"), "a");
  EXPECT_EQ(labels.Of("c"), "c");
  EXPECT_EQ(labels.Of("d"), "other");
  EXPECT_EQ(labels.Of("e"), "other");
  // Those seen first keep theirs.
  EXPECT_EQ(labels.Of("b"), "b");
  EXPECT_EQ(labels.Of("c"), "c");
}

}  // namespace
}  // namespace sidecar
