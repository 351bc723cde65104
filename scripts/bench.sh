#!/usr/bin/env bash
# The benchmarks of issue 13 and 16: installs what is missing (pgcopydb too, where Debian has it), then
# runs, each against a fresh embedded pair and with ratios to baselines measured in the same run:
#   bench/bulk_copy.py   full copies against the ceiling, the physical replace and the hand-written ways
#   bench/incremental.py append/upsert of 1% and 0.1% as a share of a full copy
#   bench/mirror.py      mirror mode with nothing / 0.1% changed as a share of a full replace
# All arguments go to bulk_copy.py; --rows and --repeat also to the other two. Tracked result files are
# written only with --json.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! command -v pgcopydb >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgcopydb >/dev/null 2>&1 ||
    echo "bench: pgcopydb not installable here; its row is left out"
fi
shared=()
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --rows | --repeat) shared+=("${args[i]}" "${args[i + 1]}") ;;
    --rows=* | --repeat=*) shared+=("${args[i]}") ;;
  esac
done
.venv/bin/python bench/bulk_copy.py "$@"
.venv/bin/python bench/incremental.py "${shared[@]}"
.venv/bin/python bench/mirror.py "${shared[@]}"
