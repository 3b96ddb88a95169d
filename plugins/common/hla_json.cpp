// Strict JSON reader (hla_json.h).
#include "hla_json.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace hla {
namespace json {
namespace {

constexpr int kMaxDepth = 64;

class Parser {
 public:
  Parser(const std::string& text, const std::string& source) : s_(text), source_(source) {}

  bool run(Value* out, std::string* error) {
    skip_ws();
    if (!value(out, 0)) return fail(error);
    skip_ws();
    if (pos_ != s_.size()) {
      set("unexpected text after the top-level value");
      return fail(error);
    }
    return true;
  }

 private:
  bool fail(std::string* error) {
    if (error != nullptr) *error = source_ + ":" + std::to_string(err_line_) + ":" + std::to_string(err_col_) + ": " + err_;
    return false;
  }
  void set(const std::string& what) {
    if (!err_.empty()) return;  // keep the first (innermost) error
    err_ = what;
    err_line_ = line_;
    err_col_ = col_;
  }
  bool at_end() const { return pos_ >= s_.size(); }
  char peek() const { return at_end() ? '\0' : s_[pos_]; }
  void advance() {
    if (s_[pos_] == '\n') {
      ++line_;
      col_ = 1;
    } else {
      ++col_;
    }
    ++pos_;
  }
  void skip_ws() {
    while (!at_end() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) advance();
  }
  bool literal(const char* word) {
    for (const char* c = word; *c; ++c) {
      if (peek() != *c) {
        set(std::string("invalid literal (expected '") + word + "')");
        return false;
      }
      advance();
    }
    return true;
  }

  bool value(Value* v, int depth) {
    v->line = line_;
    v->column = col_;
    if (depth > kMaxDepth) {
      set("nesting deeper than " + std::to_string(kMaxDepth));
      return false;
    }
    switch (peek()) {
      case '{': return object(v, depth);
      case '[': return array(v, depth);
      case '"': v->kind = Value::Kind::kString; return string(&v->string);
      case 't': v->kind = Value::Kind::kBool; v->boolean = true; return literal("true");
      case 'f': v->kind = Value::Kind::kBool; v->boolean = false; return literal("false");
      case 'n': v->kind = Value::Kind::kNull; return literal("null");
      case '\0':
        if (at_end()) {
          set("unexpected end of input (expected a value)");
          return false;
        }
        break;
      default:
        if (peek() == '-' || (peek() >= '0' && peek() <= '9')) return number(v);
    }
    set(std::string("unexpected character '") + peek() + "' (expected a value)");
    return false;
  }

  bool object(Value* v, int depth) {
    v->kind = Value::Kind::kObject;
    advance();  // {
    skip_ws();
    if (peek() == '}') {
      advance();
      return true;
    }
    for (;;) {
      skip_ws();
      if (peek() != '"') {
        set("expected a string key");
        return false;
      }
      const int kl = line_, kc = col_;
      std::string key;
      if (!string(&key)) return false;
      if (v->find(key) != nullptr) {
        err_line_ = kl;
        err_col_ = kc;
        err_ = "duplicate key \"" + key + "\"";
        return false;
      }
      skip_ws();
      if (peek() != ':') {
        set("expected ':' after the key \"" + key + "\"");
        return false;
      }
      advance();
      skip_ws();
      v->members.emplace_back(key, Value());
      if (!value(&v->members.back().second, depth + 1)) return false;
      skip_ws();
      if (peek() == ',') {
        advance();
        continue;
      }
      if (peek() == '}') {
        advance();
        return true;
      }
      set("expected ',' or '}' in an object");
      return false;
    }
  }

  bool array(Value* v, int depth) {
    v->kind = Value::Kind::kArray;
    advance();  // [
    skip_ws();
    if (peek() == ']') {
      advance();
      return true;
    }
    for (;;) {
      skip_ws();
      v->items.emplace_back();
      if (!value(&v->items.back(), depth + 1)) return false;
      skip_ws();
      if (peek() == ',') {
        advance();
        continue;
      }
      if (peek() == ']') {
        advance();
        return true;
      }
      set("expected ',' or ']' in an array");
      return false;
    }
  }

  static int hex(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool hex4(unsigned* out) {
    unsigned u = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex(peek());
      if (h < 0) {
        set("invalid \\u escape (expected 4 hex digits)");
        return false;
      }
      u = u * 16 + unsigned(h);
      advance();
    }
    *out = u;
    return true;
  }

  static void utf8(unsigned cp, std::string* out) {
    if (cp < 0x80) {
      *out += char(cp);
    } else if (cp < 0x800) {
      *out += char(0xC0 | (cp >> 6));
      *out += char(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      *out += char(0xE0 | (cp >> 12));
      *out += char(0x80 | ((cp >> 6) & 0x3F));
      *out += char(0x80 | (cp & 0x3F));
    } else {
      *out += char(0xF0 | (cp >> 18));
      *out += char(0x80 | ((cp >> 12) & 0x3F));
      *out += char(0x80 | ((cp >> 6) & 0x3F));
      *out += char(0x80 | (cp & 0x3F));
    }
  }

  bool string(std::string* out) {
    advance();  // "
    for (;;) {
      if (at_end()) {
        set("unterminated string");
        return false;
      }
      const char c = peek();
      if (c == '"') {
        advance();
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        set("control character in a string (must be escaped)");
        return false;
      }
      if (c != '\\') {
        *out += c;
        advance();
        continue;
      }
      advance();
      const char e = peek();
      switch (e) {
        case '"': *out += '"'; break;
        case '\\': *out += '\\'; break;
        case '/': *out += '/'; break;
        case 'b': *out += '\b'; break;
        case 'f': *out += '\f'; break;
        case 'n': *out += '\n'; break;
        case 'r': *out += '\r'; break;
        case 't': *out += '\t'; break;
        case 'u': {
          advance();
          unsigned cp = 0;
          if (!hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00) {  // surrogate pair
            unsigned lo = 0;
            if (peek() != '\\') {
              set("unpaired surrogate in a \\u escape");
              return false;
            }
            advance();
            if (peek() != 'u') {
              set("unpaired surrogate in a \\u escape");
              return false;
            }
            advance();
            if (!hex4(&lo)) return false;
            if (lo < 0xDC00 || lo >= 0xE000) {
              set("invalid low surrogate in a \\u escape");
              return false;
            }
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            set("unpaired surrogate in a \\u escape");
            return false;
          }
          utf8(cp, out);
          continue;  // hex4 advanced past the digits
        }
        default:
          set(std::string("invalid escape '\\") + e + "'");
          return false;
      }
      advance();
    }
  }

  bool digits() {
    if (!(peek() >= '0' && peek() <= '9')) {
      set("invalid number (expected a digit)");
      return false;
    }
    while (peek() >= '0' && peek() <= '9') advance();
    return true;
  }

  bool number(Value* v) {
    v->kind = Value::Kind::kNumber;
    const size_t start = pos_;
    bool integral = true;
    if (peek() == '-') advance();
    if (peek() == '0') {
      advance();
      if (peek() >= '0' && peek() <= '9') {
        set("invalid number (leading zero)");
        return false;
      }
    } else if (!digits()) {
      return false;
    }
    if (peek() == '.') {
      integral = false;
      advance();
      if (!digits()) return false;
    }
    if (peek() == 'e' || peek() == 'E') {
      integral = false;
      advance();
      if (peek() == '+' || peek() == '-') advance();
      if (!digits()) return false;
    }
    const std::string lit = s_.substr(start, pos_ - start);
    v->number = std::strtod(lit.c_str(), nullptr);
    if (!std::isfinite(v->number)) {
      set("number out of range: " + lit);
      return false;
    }
    if (integral) {
      errno = 0;
      const long long x = std::strtoll(lit.c_str(), nullptr, 10);
      if (errno == 0) {
        v->integral = true;
        v->integer = x;
      }
    }
    return true;
  }

  const std::string& s_;
  const std::string& source_;
  size_t pos_ = 0;
  int line_ = 1, col_ = 1;
  std::string err_;
  int err_line_ = 1, err_col_ = 1;
};

}  // namespace

const Value* Value::find(const std::string& key) const {
  for (const auto& m : members)
    if (m.first == key) return &m.second;
  return nullptr;
}

bool parse(const std::string& text, const std::string& source, Value* out, std::string* error) {
  Value v;
  Parser p(text, source);
  if (!p.run(&v, error)) return false;
  *out = std::move(v);
  return true;
}

const char* kind_name(Value::Kind kind) {
  switch (kind) {
    case Value::Kind::kNull: return "null";
    case Value::Kind::kBool: return "a boolean";
    case Value::Kind::kNumber: return "a number";
    case Value::Kind::kString: return "a string";
    case Value::Kind::kArray: return "an array";
    case Value::Kind::kObject: return "an object";
  }
  return "?";
}

}  // namespace json
}  // namespace hla
