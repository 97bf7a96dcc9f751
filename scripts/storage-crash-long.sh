#!/bin/sh
# The storage SIGKILL crash test with many rounds (the normal test run does 50).
# Usage: scripts/storage-crash-long.sh [rounds]   (default 500)
set -e
cd "$(dirname "$0")/.."
COREBUS_CRASH_ROUNDS="${1:-500}" cargo test -p corebus-broker --test storage_crash -- --nocapture
