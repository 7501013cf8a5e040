// LabelSelector: Ray's label_selector, parsed once where a request enters a
// daemon (RequestLease, ActorInfo) and matched against node labels.
//
// Each entry of the wire map is one constraint on one label key:
//   "v"          the node's label equals v
//   "!v"         the node has no such label, or another value
//   "in(a, b)"   the node's label is one of a, b
//   "!in(a, b)"  the node has no such label, or a value not listed
// A node matches when every constraint holds. An empty selector matches any
// node. The Python layer validates the syntax as Ray does; here a value is
// read as written (no error path: an odd value is an equality).
// Pure data, no I/O; safe to copy and share between threads once built.
#pragma once

#include <algorithm>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace fleet {

class LabelSelector {
 public:
  struct Constraint {
    std::string key;
    bool negated = false;             // "!" / "!in": the value must not be one of `values`
    std::vector<std::string> values;  // equality is one value
  };

  LabelSelector() = default;
  template <typename Map>  // std::map or google::protobuf::Map<string, string>
  static LabelSelector Parse(const Map& m) {
    LabelSelector s;
    for (const auto& [key, value] : m) s.constraints_.push_back(ParseOne(key, value));
    std::sort(s.constraints_.begin(), s.constraints_.end(),
              [](const Constraint& a, const Constraint& b) { return a.key < b.key; });
    return s;
  }

  bool empty() const { return constraints_.empty(); }
  const std::vector<Constraint>& constraints() const { return constraints_; }

  // Whether a node with these labels satisfies every constraint.
  template <typename Map>
  bool Matches(const Map& labels) const {
    for (const auto& c : constraints_) {
      auto it = labels.find(c.key);
      bool listed = it != labels.end() &&
                    std::find(c.values.begin(), c.values.end(), it->second) != c.values.end();
      if (listed == c.negated) return false;
    }
    return true;
  }

 private:
  static std::string Trim(std::string_view s) {
    while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
    while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
    return std::string(s);
  }
  static Constraint ParseOne(const std::string& key, std::string_view v) {
    Constraint c{key, false, {}};
    if (!v.empty() && v.front() == '!') {
      c.negated = true;
      v.remove_prefix(1);
    }
    if (v.size() >= 4 && v.substr(0, 3) == "in(" && v.back() == ')') {
      std::string_view list = v.substr(3, v.size() - 4);
      size_t start = 0;
      while (start <= list.size()) {
        size_t comma = list.find(',', start);
        if (comma == std::string_view::npos) comma = list.size();
        c.values.push_back(Trim(list.substr(start, comma - start)));
        start = comma + 1;
      }
    } else {
      c.values.emplace_back(v);
    }
    return c;
  }

  std::vector<Constraint> constraints_;
};

}  // namespace fleet
