#include <gtest/gtest.h>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dreambooth/core/error.h"
#include "dreambooth/io/checkpoint_dir.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;

namespace {

void write_checkpoint(const fs::path& out, int64_t step, const std::string& payload) {
  AtomicDir dir((out / checkpoint_name(step)).string());
  std::ofstream(fs::path(dir.path()) / "weights.bin") << payload;
  std::string files;
  for (const auto& [rel, size] : checkpoint_files(dir.path()))
    files += (files.empty() ? "\"" : ", \"") + rel + "\": " + std::to_string(size);
  std::ofstream(fs::path(dir.path()) / "state.json")
      << "{\"step\": " << step << ", \"files\": {" << files << "}}";
  dir.commit();
}

}  // namespace

TEST(Checkpoint, CommitListResolvePrune) {
  const db::test::TempDir t("ckpt_basic");
  const fs::path out = t.path;
  for (int64_t s : {2, 10, 4}) write_checkpoint(out, s, "w" + std::to_string(s));
  fs::create_directories(out / "checkpoint-99");  // no state.json: incomplete, ignored
  auto all = list_checkpoints(out.string());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all.back().step, 10);
  EXPECT_EQ(resolve_resume(out.string(), "latest"), (out / "checkpoint-10").string());
  EXPECT_THROW(resolve_resume(out.string(), (out / "checkpoint-99").string()), Error);
  auto removed = prune_checkpoints(out.string(), 2);
  EXPECT_EQ(removed.size(), 1u);
  EXPECT_FALSE(fs::exists(out / "checkpoint-2"));
  EXPECT_TRUE(fs::exists(out / "checkpoint-4"));
  EXPECT_THROW(resolve_resume(db::test::TempDir("ckpt_empty").str(), "latest"), Error);
}

TEST(Checkpoint, UncommittedFolderIsRemoved) {
  const db::test::TempDir t("ckpt_uncommitted");
  const fs::path out = t.path;
  std::string tmp;
  {
    AtomicDir dir((out / "checkpoint-1").string());
    tmp = dir.path();
    EXPECT_TRUE(fs::exists(tmp));
  }
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(list_checkpoints(out.string()).empty());
}

// A process killed while writing a checkpoint leaves the previous one as "latest", intact.
TEST(Checkpoint, KillDuringWriteLeavesPreviousUsable) {
  const db::test::TempDir t("ckpt_kill");
  const fs::path out = t.path;
  write_checkpoint(out, 3, "previous");
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    AtomicDir dir((out / "checkpoint-6").string());
    std::ofstream f(fs::path(dir.path()) / "weights.bin");
    f << std::string(1 << 20, 'x') << std::flush;
    char c = 1;
    (void)!write(pipefd[1], &c, 1);  // half-written: tell the parent, then wait to be killed
    pause();
    _exit(0);
  }
  char c;
  ASSERT_EQ(read(pipefd[0], &c, 1), 1);
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status));
  EXPECT_EQ(resolve_resume(out.string(), "latest"), (out / "checkpoint-3").string());
  std::ifstream f(out / "checkpoint-3" / "weights.bin");
  std::string payload((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(payload, "previous");
  // The killed writer's temporary folder is cleaned up by the next prune.
  auto removed = prune_checkpoints(out.string(), 0);
  EXPECT_EQ(removed.size(), 1u);
}

// Complete means every file the manifest lists is there with its size (issue 16): a folder with only
// state.json, or with a truncated file, is not a checkpoint, and "auto" starts fresh without one.
TEST(Checkpoint, CompleteOnlyWithEveryListedFile) {
  const db::test::TempDir t("ckpt_complete");
  const fs::path out = t.path;
  EXPECT_EQ(resolve_resume(out.string(), "auto"), "");
  write_checkpoint(out, 2, "two");
  write_checkpoint(out, 4, "four");
  EXPECT_EQ(resolve_resume(out.string(), "auto"), (out / "checkpoint-4").string());
  std::ofstream(out / "checkpoint-4" / "weights.bin", std::ios::trunc) << "fo";  // truncated
  EXPECT_NE(checkpoint_incomplete_reason((out / "checkpoint-4").string()).find("weights.bin has 2 bytes"),
            std::string::npos);
  EXPECT_EQ(resolve_resume(out.string(), "latest"), (out / "checkpoint-2").string());
  EXPECT_THROW(resolve_resume(out.string(), (out / "checkpoint-4").string()), Error);
  fs::create_directories(out / "checkpoint-6");
  std::ofstream(out / "checkpoint-6" / "state.json") << "{\"step\": 6, \"files\": {\"unet/x\": 3}}";
  EXPECT_EQ(checkpoint_incomplete_reason((out / "checkpoint-6").string()), "unet/x is missing");
  fs::create_directories(out / "checkpoint-8");
  std::ofstream(out / "checkpoint-8" / "state.json") << "{\"step\": 8}";  // no manifest, no files
  EXPECT_EQ(checkpoint_incomplete_reason((out / "checkpoint-8").string()), "unet is missing");
  std::ofstream(out / "checkpoint-8" / "state.json", std::ios::trunc) << "{\"step\": ";  // torn
  EXPECT_EQ(checkpoint_incomplete_reason((out / "checkpoint-8").string()), "state.json does not parse");
  ASSERT_EQ(list_checkpoints(out.string()).size(), 1u);
  EXPECT_EQ(resolve_resume(out.string(), "auto"), (out / "checkpoint-2").string());
}
