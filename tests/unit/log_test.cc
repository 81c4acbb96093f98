// The log's two formats and its scoped fields, read back from what it
// writes to fd 2.
#include "common/log.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <stdio.h>
#include <unistd.h>

#include <string>

#include "gtest/gtest.h"

namespace sidecar {
namespace {

// Runs `log` with fd 2 going to a temporary file; returns what it wrote.
template <typename F>
std::string Captured(F log) {
  std::FILE* tmp = std::tmpfile();
  const int saved = ::dup(2);
  ::dup2(::fileno(tmp), 2);
  log();
  ::dup2(saved, 2);
  ::close(saved);
  std::rewind(tmp);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, tmp)) > 0) out.append(buf, n);
  std::fclose(tmp);
  return out;
}

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override { SetLogTag("unit"); }
  void TearDown() override { SetLogFormat(LogFormat::kText); }
};

TEST_F(LogTest, TextIsOneLinePerEventWithTheScopesFields) {
  std::string out = Captured([] {
    ScopedLogFields outer({{"request_id", "job-1"}, {"empty", ""}});
    {
      ScopedLogFields inner({{"source", "a b"}});
      EXPECT_EQ(CurrentLogField("request_id"), "job-1");
      SC_LOG(INFO) << "two\nlines";
    }
    SC_LOG(WARNING) << "after";
  });
  // "I1208 10:00:00.000000 unit] two\nlines request_id=job-1 source=\"a b\""
  const size_t first_end = out.find('\n');
  ASSERT_NE(first_end, std::string::npos);
  const std::string first = out.substr(0, first_end);
  const std::string second = out.substr(first_end + 1);
  EXPECT_EQ(first[0], 'I');
  EXPECT_NE(first.find(" unit] two\\nlines request_id=job-1 source=\"a b\""),
            std::string::npos)
      << first;
  EXPECT_EQ(first.find("empty"), std::string::npos) << "empty values left out";
  EXPECT_EQ(second[0], 'W');
  EXPECT_NE(second.find(" unit] after request_id=job-1\n"), std::string::npos)
      << second;
  EXPECT_EQ(second.find("source"), std::string::npos) << "inner scope ended";
  EXPECT_EQ(CurrentLogField("request_id"), "") << "outer scope ended";
}

TEST_F(LogTest, JsonIsOneObjectPerLineWhatEverTheMessageHolds) {
  SetLogFormat(LogFormat::kJson);
  const std::string tricky = "quote \" backslash \\ newline \n tab \t bell \a é";
  std::string out = Captured([&] {
    ScopedLogFields f({{"request_id", "job-2"}});
    SC_LOG(ERROR) << tricky;
  });
  ASSERT_FALSE(out.empty());
  ASSERT_EQ(out.back(), '\n');
  ASSERT_EQ(out.find('\n'), out.size() - 1) << "one line: " << out;
  google::protobuf::Struct obj;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(out, &obj).ok())
      << out;
  const auto& f = obj.fields();
  EXPECT_EQ(f.at("msg").string_value(), tricky);
  EXPECT_EQ(f.at("level").string_value(), "ERROR");
  EXPECT_EQ(f.at("service").string_value(), "unit");
  EXPECT_EQ(f.at("request_id").string_value(), "job-2");
  // 2026-12-08T10:00:00.000000Z
  const std::string ts = f.at("ts").string_value();
  ASSERT_EQ(ts.size(), 27u) << ts;
  EXPECT_EQ(ts[10], 'T');
  EXPECT_EQ(ts.back(), 'Z');
}

}  // namespace
}  // namespace sidecar
