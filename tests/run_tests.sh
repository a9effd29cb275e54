#!/usr/bin/env bash
# The test command: the GoogleTest suite, then the suites that need several MPI ranks.
# Usage: tests/run_tests.sh [BUILD_DIR]
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
status=0
"$build/dreambooth_tests" --gtest_color=no || status=1
exit $status
