// GoldenManifest.*: tests/golden/MANIFEST lists every committed golden file (one path per line, relative
// to tests/golden). Each must be present and every file there must be listed. The tests that read a
// golden already fail when it is missing (test_helpers.h: golden_path); this makes the rule hold for
// every file, including those only the Python side reads (tokenizer.json), and names each one.
// After adding or removing goldens:
//   git ls-files tests/golden | sed 's|^tests/golden/||' | grep -v '^MANIFEST$' > tests/golden/MANIFEST
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "test_helpers.h"

namespace fs = std::filesystem;

namespace {

std::set<std::string> manifest() {
  const std::string path = std::string(db::test::kCommittedGolden) + "/MANIFEST";
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path << ": missing";
  std::set<std::string> r;
  for (std::string line; std::getline(f, line);)
    if (!line.empty()) r.insert(line);
  return r;
}

}  // namespace

TEST(GoldenManifest, EveryListedFileIsPresent) {
  const std::set<std::string> listed = manifest();
  EXPECT_GT(listed.size(), 150u);
  int missing = 0;
  for (const std::string& rel : listed) {
    const fs::path p = fs::path(db::test::kCommittedGolden) / rel;
    if (!fs::is_regular_file(p) || fs::file_size(p) == 0) {
      ADD_FAILURE() << p.string() << ": committed golden file missing or empty";
      ++missing;
    }
  }
  std::printf("  %zu golden files listed, %d missing\n", listed.size(), missing);
}

TEST(GoldenManifest, EveryFileIsListed) {
  const std::set<std::string> listed = manifest();
  for (const auto& e : fs::recursive_directory_iterator(db::test::kCommittedGolden)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = fs::relative(e.path(), db::test::kCommittedGolden).string();
    if (rel == "MANIFEST") continue;
    EXPECT_TRUE(listed.count(rel)) << e.path().string() << " is not in tests/golden/MANIFEST";
  }
}
