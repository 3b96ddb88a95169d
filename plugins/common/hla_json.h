// A small strict JSON reader (RFC 8259: objects, arrays, strings with escapes, numbers, true,
// false, null; no comments, no trailing commas, one top-level value) for manifest.json.
// Errors name the position: "<source>:<line>:<column>: <what>".
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace hla {
namespace json {

struct Value {
  enum class Kind { kNull, kBool, kNumber, kString, kArray, kObject };
  Kind kind = Kind::kNull;
  bool boolean = false;
  double number = 0.0;
  bool integral = false;   // the literal had no fraction / exponent and fits int64
  int64_t integer = 0;     // its value when integral
  std::string string;
  std::vector<Value> items;                            // array
  std::vector<std::pair<std::string, Value>> members;  // object, in file order (keys unique)
  int line = 0, column = 0;                            // where the value starts

  // Member `key` of an object, or nullptr.
  const Value* find(const std::string& key) const;
};

// Parses `text`; on failure returns false and sets `error` to "<source>:<line>:<column>: <what>".
bool parse(const std::string& text, const std::string& source, Value* out, std::string* error);

const char* kind_name(Value::Kind kind);

}  // namespace json
}  // namespace hla
