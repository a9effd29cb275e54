// `dreambooth compare A B`: how far apart two models are, tensor by tensor.
#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "dreambooth/cli/command.h"
#include "dreambooth/core/error.h"
#include "dreambooth/pipelines/compare.h"
#include "option_checks.h"

namespace db {
namespace {

int run_compare(int argc, char** argv) {
  po::options_description opts("options");
  opts.add_options()("tol", po::value<double>()->default_value(0.0),
                     "exit 0 when every tensor's relative L2 difference is <= TOL (default 0: identical)")(
      "all", "print every tensor, not only the 10 that differ most")("json", "print one JSON object instead");
  po::options_description hidden;
  hidden.add_options()("paths", po::value<std::vector<std::string>>()->multitoken(), "A B");
  po::positional_options_description pos;
  pos.add("paths", 2);
  po::variables_map vm;
  if (!parse_command_line(
          argc, argv, "dreambooth compare A B [--tol T] [--all] [--json]",
          "Compares two models tensor by tensor: A and B are both model folders (diffusers layout,\n"
          "or checkpoint-STEP folders) or both .safetensors files. For each tensor it reports the\n"
          "largest absolute difference and the relative L2 difference ||A - B|| / ||B||, then one\n"
          "summary line per component (unet/, text_encoder/, vae/, ...).\n"
          "Exit status: 0 when every tensor is within --tol and both hold the same tensors, 1 when\n"
          "not, 2 for a bad command line.",
          opts, vm, &pos, &hidden))
    return 0;
  if (!vm.count("paths") || vm["paths"].as<std::vector<std::string>>().size() != 2)
    throw UsageError("compare: expected two paths A and B (see 'dreambooth compare --help')");
  const auto paths = vm["paths"].as<std::vector<std::string>>();
  const double tol = vm["tol"].as<double>();
  check_range("compare", "tol", tol, at_least(0));
  CompareResult r = compare_models(paths[0], paths[1]);

  // Per-component summary: the part of the name before the first '/'.
  struct Summary {
    int64_t tensors = 0, changed = 0, numel = 0;
    double max_rel = 0, max_abs = 0;
  };
  std::map<std::string, Summary> comps;
  for (const auto& d : r.diffs) {
    auto slash = d.name.find('/');
    Summary& s = comps[slash == std::string::npos ? "(file)" : d.name.substr(0, slash)];
    s.tensors++;
    s.numel += d.numel;
    s.changed += d.max_abs > 0;
    s.max_rel = std::max(s.max_rel, d.rel_l2);
    s.max_abs = std::max(s.max_abs, d.max_abs);
  }
  const bool within =
      r.only_in_a.empty() && r.only_in_b.empty() && r.shape_mismatch.empty() && r.max_rel_l2() <= tol;

  if (vm.count("json")) {
    nlohmann::json j;
    j["within_tol"] = within;
    j["tol"] = tol;
    j["only_in_a"] = r.only_in_a;
    j["only_in_b"] = r.only_in_b;
    j["shape_mismatch"] = r.shape_mismatch;
    for (const auto& [c, s] : comps)
      j["components"][c] = {{"tensors", s.tensors},
                            {"changed", s.changed},
                            {"numel", s.numel},
                            {"max_rel_l2", s.max_rel},
                            {"max_abs", s.max_abs}};
    for (const auto& d : r.diffs)
      j["tensors"][d.name] = {{"max_abs", d.max_abs}, {"rel_l2", d.rel_l2}, {"numel", d.numel}};
    std::cout << j.dump(1) << "\n";
    return within ? 0 : 1;
  }

  std::vector<TensorDiff> shown = r.diffs;
  std::sort(shown.begin(), shown.end(), [](const auto& x, const auto& y) { return x.rel_l2 > y.rel_l2; });
  if (!vm.count("all") && shown.size() > 10) shown.resize(10);
  if (!shown.empty()) std::printf("%-70s %12s %12s\n", "tensor", "max_abs", "rel_l2");
  for (const auto& d : shown) std::printf("%-70s %12.4e %12.4e\n", d.name.c_str(), d.max_abs, d.rel_l2);
  for (const auto& n : r.only_in_a) std::printf("only in A: %s\n", n.c_str());
  for (const auto& n : r.only_in_b) std::printf("only in B: %s\n", n.c_str());
  for (const auto& n : r.shape_mismatch) std::printf("shape differs: %s\n", n.c_str());
  for (const auto& [c, s] : comps)
    std::printf("%-14s %5lld tensors, %5lld changed, max rel_l2 %.4e, max abs %.4e\n", c.c_str(),
                (long long)s.tensors, (long long)s.changed, s.max_rel, s.max_abs);
  std::printf("%s: %zu tensors compared, max rel_l2 %.4e (tol %g)\n",
              within ? "within tolerance" : "DIFFERENT", r.diffs.size(), r.max_rel_l2(), tol);
  return within ? 0 : 1;
}

}  // namespace

DB_COMMAND(compare, "compare", "per-tensor differences between two model folders or checkpoints",
           run_compare);

}  // namespace db
