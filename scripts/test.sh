#!/usr/bin/env bash
# The test command: set up what is missing, lint, then the whole suite against a real PostgreSQL pair.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
