#include "services/sidecarctl/json_output.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace sidecar::ctl {

std::string MessageJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions options;
  options.always_print_primitive_fields = true;
  options.preserve_proto_field_names = true;
  std::string json;
  // Fails only for a message that has no JSON form (an Any of an unknown
  // type); none of the services' answers has one.
  if (!google::protobuf::util::MessageToJsonString(m, &json, options).ok()) {
    return "null";
  }
  return json;
}

std::string JsonString(absl::string_view text) {
  // The printer's escaping of a string value, rather than a second one here.
  google::protobuf::Value v;
  v.set_string_value(std::string(text));
  return MessageJson(v);
}

std::string JsonArray(const std::vector<std::string>& values) {
  return absl::StrCat("[", absl::StrJoin(values, ","), "]");
}

JsonObject& JsonObject::Add(absl::string_view name, std::string json) {
  members_.push_back(absl::StrCat(JsonString(name), ":", json));
  return *this;
}

JsonObject& JsonObject::Add(absl::string_view name,
                            const google::protobuf::Message& m) {
  return Add(name, MessageJson(m));
}

std::string JsonObject::ToString() const {
  return absl::StrCat("{", absl::StrJoin(members_, ","), "}");
}

}  // namespace sidecar::ctl
