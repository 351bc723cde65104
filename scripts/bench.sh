#!/usr/bin/env bash
# The bulk-copy benchmark: installs what is missing (pgcopydb too, where Debian has it), then runs
# bench/bulk_copy.py against a fresh embedded pair. Arguments go to the script (--rows, --repeat).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! command -v pgcopydb >/dev/null && [ "$(id -u)" = 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgcopydb >/dev/null 2>&1 ||
    echo "bench: pgcopydb not installable here; its row is left out"
fi
exec .venv/bin/python bench/bulk_copy.py "$@"
