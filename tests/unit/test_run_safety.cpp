// The run lifecycle's building blocks (issue 16 items 1, 4, 5): the --out lock, --out vs --model, the
// metrics log's checked writes and resume truncation, and the stop-signal flag.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "dreambooth/core/error.h"
#include "dreambooth/core/stop_signal.h"
#include "dreambooth/io/out_lock.h"
#include "dreambooth/pipelines/metrics_log.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;

namespace {

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

long dead_pid() {  // a pid that just exited (reaped): kill(pid, 0) fails with ESRCH
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  int status = 0;
  waitpid(pid, &status, 0);
  return pid;
}

}  // namespace

TEST(OutLock, SecondRunIsRefusedNamingTheHolder) {
  const db::test::TempDir t("lock_held");
  OutLock first(t.str());
  const OutLockHolder me = read_out_lock(first.path());
  EXPECT_EQ(me.pid, long(getpid()));
  EXPECT_EQ(me.host, this_host());
  // Another live holder on this host: our parent process stands in for it.
  first.release();
  EXPECT_FALSE(fs::exists(t.path / kOutLockName));
  std::ofstream(t.path / kOutLockName) << "host " << this_host() << "\npid " << getppid() << "\nslurm_job \n";
  try {
    OutLock second(t.str());
    FAIL() << "a held lock was taken";
  } catch (const OutLockHeld& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("host " + this_host() + " pid " + std::to_string(getppid())), std::string::npos)
        << msg;
  }
  // A holder on another host cannot be checked: held, whatever its pid.
  std::ofstream(t.path / kOutLockName, std::ios::trunc)
      << "host elsewhere.example\npid " << dead_pid() << "\n";
  EXPECT_THROW(OutLock(t.str()), OutLockHeld);
  EXPECT_TRUE(fs::exists(t.path / kOutLockName));  // a refused run leaves the holder's lock alone
}

TEST(OutLock, StaleLockIsTakenOver) {
  const db::test::TempDir t("lock_stale");
  std::ofstream(t.path / kOutLockName) << "host " << this_host() << "\npid " << dead_pid() << "\n";
  {
    OutLock lock(t.str());
    EXPECT_EQ(read_out_lock(lock.path()).pid, long(getpid()));
  }
  EXPECT_FALSE(fs::exists(t.path / kOutLockName));  // released on destruction
  // The same Slurm job requeued on another node: the earlier incarnation's lock is ours.
  setenv("SLURM_JOB_ID", "4242", 1);
  std::ofstream(t.path / kOutLockName) << "host other-node\npid 1\nslurm_job 4242\n";
  EXPECT_NO_THROW(OutLock(t.str()));
  std::ofstream(t.path / kOutLockName) << "host other-node\npid 1\nslurm_job 4141\n";
  EXPECT_THROW(OutLock(t.str()), OutLockHeld);
  unsetenv("SLURM_JOB_ID");
}

TEST(OutLock, OutMayNotBeOrContainTheModel) {
  const db::test::TempDir t("out_model");
  fs::create_directories(t.path / "model" / "unet");
  fs::create_directory_symlink(t.path / "model", t.path / "link");
  const std::string m = (t.path / "model").string();
  EXPECT_THROW(check_out_not_model(m, m), UsageError);
  EXPECT_THROW(check_out_not_model(m + "/", m), UsageError);
  EXPECT_THROW(check_out_not_model((t.path / "link").string(), m), UsageError);
  EXPECT_THROW(check_out_not_model(m + "/tuned", m), UsageError);
  EXPECT_THROW(check_out_not_model((t.path / "link" / "new").string(), m), UsageError);
  EXPECT_THROW(check_out_not_model(t.str(), m), UsageError);
  EXPECT_NO_THROW(check_out_not_model((t.path / "model-tuned").string(), m));
  EXPECT_NO_THROW(check_out_not_model((t.path / "mod").string(), m));
}

TEST(Metrics, ResumeTruncationKeepsEarlierLinesByteForByte) {
  const db::test::TempDir t("metrics_trunc");
  const fs::path p = t.path / "metrics.jsonl";
  const std::string kept =
      "{\"step\":1,\"loss\":0.5}\n{\"step\":2, \"loss\":0.25 }\nnot json\n{\"step\":3}\n";
  std::ofstream(p) << kept << "{\"step\":4}\n{\"step\":5}\n{\"step\":6,\"lo";
  const MetricsTrim r = truncate_metrics(p.string(), 3);
  EXPECT_EQ(slurp(p), kept);
  EXPECT_EQ(r.lines_kept, 4);
  EXPECT_EQ(r.last_step, 3);
  EXPECT_EQ(r.unparsed_kept, 1);
  // Only a torn last line: cut it, keep the rest.
  std::ofstream(p, std::ios::app) << "{\"step\":4,\"lo";
  EXPECT_EQ(truncate_metrics(p.string(), 9).last_step, 3);
  EXPECT_EQ(slurp(p), kept);
  EXPECT_EQ(truncate_metrics((t.path / "none.jsonl").string(), 3).lines_kept, 0);
}

TEST(Metrics, WriteFailuresAreErrors) {
  MetricsLog full("/dev/full", true);
  try {
    full.append_line("{\"step\":1}");
    FAIL() << "a write to /dev/full succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/full: cannot write the metrics line"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(MetricsLog("/nonexistent-dir/metrics.jsonl", true), Error);
  const db::test::TempDir t("metrics_ok");
  MetricsLog ok((t.path / "m.jsonl").string(), true);
  ok.append_line("{\"step\":1}");
  ok.sync();
  EXPECT_EQ(slurp(t.path / "m.jsonl"), "{\"step\":1}\n");
}

TEST(StopSignal, TermAndUsr1SetTheFlag) {
  for (int sig : {SIGTERM, SIGUSR1}) {
    install_stop_handlers();
    EXPECT_FALSE(stop_requested());
    ASSERT_EQ(raise(sig), 0);  // with the default action this would end the test binary
    EXPECT_TRUE(stop_requested());
    EXPECT_EQ(stop_signal(), sig);
    remove_stop_handlers();
    EXPECT_FALSE(stop_requested());
  }
}
