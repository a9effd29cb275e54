// Cli.*: the init-model and inspect subcommands, run as the real binary (build/dreambooth next to
// the test binary).
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct Result {
  int code = -1;  // exit status; -1 when killed by a signal
  std::string out, err;
};

fs::path binary() {
  return fs::read_symlink("/proc/self/exe").parent_path() / "dreambooth";
}

std::string slurp(const fs::path& p) {
  std::ifstream f(p);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct Cli : ::testing::Test {
  fs::path dir;
  void SetUp() override {
    // `make` builds both binaries; a missing one is a broken build, not a reason to skip.
    ASSERT_TRUE(fs::exists(binary())) << binary() << " not built (make builds it beside the test binary)";
    dir = fs::temp_directory_path() / ("db_cli_model_" + std::to_string(::getpid()));
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  void TearDown() override {
    if (!dir.empty()) fs::remove_all(dir);
  }
  Result run(const std::string& args) {
    const fs::path o = dir / "stdout", e = dir / "stderr";
    std::string cmd = binary().string() + " " + args + " >" + o.string() + " 2>" + e.string();
    int st = std::system(cmd.c_str());
    Result r;
    if (WIFEXITED(st)) r.code = WEXITSTATUS(st);
    r.out = slurp(o);
    r.err = slurp(e);
    return r;
  }
};

}  // namespace

TEST_F(Cli, InitModelThenInspect) {
  const std::string m = (dir / "m").string();
  Result r = run("init-model --preset sd1-tiny --out " + m + " --seed 1");
  ASSERT_EQ(r.code, 0) << r.err;
  for (const char* f : {"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                        "text_encoder/config.json", "text_encoder/model.safetensors", "vae/config.json",
                        "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
                        "tokenizer/vocab.json", "tokenizer/merges.txt"})
    EXPECT_TRUE(fs::exists(dir / "m" / f)) << f;

  r = run("inspect " + m);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("283,284 parameters"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("UNet2DConditionModel"), std::string::npos);
  EXPECT_NE(r.out.find("PNDMScheduler"), std::string::npos);

  r = run("inspect --json " + m);
  ASSERT_EQ(r.code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["components"]["unet"]["parameters"], 283284);
  EXPECT_EQ(j["components"]["text_encoder"]["parameters"], 48106);
  EXPECT_EQ(j["components"]["vae"]["parameters"], 43711);
  EXPECT_EQ(j["components"]["unet"]["dtypes"], json({"F32"}));
  EXPECT_EQ(j["components"]["tokenizer"]["present"], true);

  r = run("inspect --params " + m);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("conv_in.weight [16, 4, 3, 3] F32"), std::string::npos);
  EXPECT_NE(r.out.find("text_model.final_layer_norm.bias [32] F32"), std::string::npos);
}

TEST_F(Cli, InitModelRefusesNonEmptyFolderAndBadArguments) {
  fs::create_directories(dir / "full");
  std::ofstream(dir / "full" / "keep.txt") << "x";
  Result r = run("init-model --preset sd1-tiny --out " + (dir / "full").string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("not empty"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir / "full" / "keep.txt"));
  r = run("init-model --preset sd1-tiny --dtype fp16 --overwrite --out " + (dir / "full").string());
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(fs::exists(dir / "full" / "keep.txt"));

  // A trailing slash names the same folder.
  r = run("init-model --preset sd1-tiny --overwrite --out " + (dir / "full").string() + "/");
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir / "full" / "model_index.json"));
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_TRUE(e.path().filename() == "full" || e.path().filename().string().rfind("std", 0) == 0)
        << e.path();

  EXPECT_EQ(run("init-model --preset sdxl --out " + (dir / "x").string()).code, 2);
  EXPECT_EQ(run("init-model --preset sd1-tiny --dtype int8 --out " + (dir / "x").string()).code, 2);
  EXPECT_EQ(run("init-model --preset sd1-tiny").code, 2);
  EXPECT_FALSE(fs::exists(dir / "x"));
}

TEST_F(Cli, InspectHostileWeightsFailsWithOneLine) {
  const fs::path m = dir / "m";
  ASSERT_EQ(run("init-model --preset sd1-tiny --out " + m.string()).code, 0);
  const fs::path w = m / "unet" / "diffusion_pytorch_model.safetensors";
  const std::string good = slurp(w);
  auto check = [&](const std::string& bytes, const char* what) {
    std::ofstream(w, std::ios::binary | std::ios::trunc) << bytes;
    Result r = run("inspect " + m.string());
    EXPECT_EQ(r.code, 1) << what << ": " << r.err;
    EXPECT_NE(r.err.find(w.string()), std::string::npos) << what << ": " << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << what << ": " << r.err;
  };
  check(good.substr(0, good.size() / 2), "truncated data");
  check(good.substr(0, 100), "truncated header");
  check("", "empty");
  std::string huge = good;
  for (int i = 0; i < 8; ++i) huge[size_t(i)] = char(0xff);
  check(huge, "header length 2^64-1");
  std::string garbled = good;
  for (size_t i = 8; i < 200; ++i) garbled[i] = '{';
  check(garbled, "garbled header");
  // A pickle-only folder.
  fs::remove(w);
  std::ofstream(m / "unet" / "diffusion_pytorch_model.bin") << "PK";
  Result r = run("inspect " + m.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("only safetensors weights are supported"), std::string::npos) << r.err;
}
