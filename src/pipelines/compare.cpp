#include "dreambooth/pipelines/compare.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>

#include "dreambooth/core/error.h"
#include "dreambooth/io/safetensors.h"

namespace fs = std::filesystem;

namespace db {
namespace {

struct Source {
  std::vector<std::unique_ptr<SafetensorsSet>> sets;
  std::map<std::string, std::pair<const SafetensorsSet*, std::string>> tensors;  // qualified -> (set, name)
};

// Every weight file of a model folder. An index.json and the shards it names count once (the set).
std::vector<fs::path> weight_files(const fs::path& root) {
  std::vector<fs::path> indexes, files;
  for (const auto& e : fs::recursive_directory_iterator(root)) {
    if (!e.is_regular_file()) continue;
    const std::string n = e.path().filename().string();
    if (n.size() > 23 && n.ends_with(".safetensors.index.json"))
      indexes.push_back(e.path());
    else if (n.ends_with(".safetensors"))
      files.push_back(e.path());
  }
  std::vector<fs::path> out = indexes;
  for (const auto& f : files) {
    bool sharded = std::any_of(indexes.begin(), indexes.end(),
                               [&](const fs::path& i) { return i.parent_path() == f.parent_path(); });
    if (!sharded) out.push_back(f);
  }
  std::sort(out.begin(), out.end());
  return out;
}

Source open_source(const std::string& path) {
  Source s;
  const fs::path root(path);
  DB_CHECK(fs::exists(root), path, ": no such file or folder");
  std::vector<fs::path> files = fs::is_directory(root) ? weight_files(root) : std::vector<fs::path>{root};
  DB_CHECK(!files.empty(), path, ": no .safetensors files found");
  for (const auto& f : files) {
    s.sets.push_back(std::make_unique<SafetensorsSet>(SafetensorsSet::open(f.string())));
    std::string prefix;
    if (fs::is_directory(root)) {
      fs::path rel = fs::relative(f.parent_path(), root);
      if (rel != ".") prefix = rel.generic_string() + "/";
    }
    for (const auto& n : s.sets.back()->names()) {
      auto [it, fresh] = s.tensors.emplace(prefix + n, std::make_pair(s.sets.back().get(), n));
      DB_CHECK(fresh, f.string(), ": tensor '", prefix + n, "' also appears in another file of ", path);
    }
  }
  return s;
}

std::vector<float> read_all(const SafetensorsSet& set, const std::string& name, Shape* shape) {
  auto [file, info] = set.find(name);
  *shape = info->shape;
  std::vector<float> v(size_t(shape_numel(info->shape)));
  file->read_f32(*info, v.data());
  return v;
}

}  // namespace

double CompareResult::max_rel_l2() const {
  double m = 0;
  for (const auto& d : diffs) m = std::max(m, d.rel_l2);
  return m;
}

CompareResult compare_models(const std::string& a, const std::string& b) {
  DB_CHECK(fs::is_directory(a) == fs::is_directory(b), "compare: ", a, " and ", b,
           " must both be folders or both be files");
  Source sa = open_source(a), sb = open_source(b);
  CompareResult r;
  for (const auto& [name, where] : sa.tensors) {
    auto it = sb.tensors.find(name);
    if (it == sb.tensors.end()) {
      r.only_in_a.push_back(name);
      continue;
    }
    Shape shape_a, shape_b;
    std::vector<float> va = read_all(*where.first, where.second, &shape_a);
    std::vector<float> vb = read_all(*it->second.first, it->second.second, &shape_b);
    if (shape_a != shape_b) {
      r.shape_mismatch.push_back(name + " " + shape_str(shape_a) + " vs " + shape_str(shape_b));
      continue;
    }
    TensorDiff d{name, 0, 0, int64_t(va.size())};
    double num = 0, den = 0;
    for (size_t i = 0; i < va.size(); ++i) {
      const double diff = double(va[i]) - double(vb[i]);
      d.max_abs = std::max(d.max_abs, std::fabs(diff));
      num += diff * diff;
      den += double(vb[i]) * vb[i];
    }
    d.rel_l2 = num == 0 ? 0 : den == 0 ? std::numeric_limits<double>::infinity() : std::sqrt(num / den);
    r.diffs.push_back(d);
  }
  for (const auto& [name, where] : sb.tensors)
    if (!sa.tensors.count(name)) r.only_in_b.push_back(name);
  return r;
}

}  // namespace db
