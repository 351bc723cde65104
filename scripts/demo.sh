#!/usr/bin/env bash
# The main job: set up what is missing, start an embedded PostgreSQL pair with sample data, run the
# example DAGs end to end against it, and print what happened.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/demo.py "$@"
