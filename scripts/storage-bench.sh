#!/bin/sh
# Storage engine benchmark next to fio (same I/O pattern, same session); prints a Markdown
# table for BENCHMARKS.md "## storage".
# Usage: scripts/storage-bench.sh [dir] [seconds per case]
set -e
cd "$(dirname "$0")/.."
if ! command -v fio >/dev/null 2>&1; then
    apt-get update >/dev/null && apt-get install -y fio >/dev/null
fi
cargo run --release -p corebus-broker --example storage_bench -- "${1:-/tmp/corebus-storage-bench}" "${2:-5}"
