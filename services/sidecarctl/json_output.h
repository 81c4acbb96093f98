// JSON output of sidecarctl (--json): protobuf messages in proto3's JSON
// mapping, and the few pieces needed to combine several into one object
// for commands that make more than one call.
#ifndef SIDECAR_SERVICES_SIDECARCTL_JSON_OUTPUT_H_
#define SIDECAR_SERVICES_SIDECARCTL_JSON_OUTPUT_H_

#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace sidecar::ctl {

// `m` as one line of JSON: field names as the .proto spells them, fields at
// their default values printed too (so that a script need not know the
// defaults: a zero count or a false "online" is there), enums by name,
// bytes in base64 and 64-bit integers as strings, as proto3's JSON mapping
// says.
std::string MessageJson(const google::protobuf::Message& m);
// `text` as a JSON string, quotes included.
std::string JsonString(absl::string_view text);
// A JSON array of already encoded values.
std::string JsonArray(const std::vector<std::string>& values);

// One JSON object built from named, already encoded values, in the order
// they are added. Names are not checked for duplicates.
class JsonObject {
 public:
  // Adds `name` with the encoded value `json`.
  JsonObject& Add(absl::string_view name, std::string json);
  // Adds `name` with MessageJson(m).
  JsonObject& Add(absl::string_view name, const google::protobuf::Message& m);
  // The object, on one line, without a trailing newline.
  std::string ToString() const;

 private:
  std::vector<std::string> members_;  // "\"name\":value"
};

}  // namespace sidecar::ctl

#endif  // SIDECAR_SERVICES_SIDECARCTL_JSON_OUTPUT_H_
