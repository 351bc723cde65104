#!/usr/bin/env bash
# The test command: set up what is missing, lint, type-check (Airflow's mypy settings, pyproject.toml),
# build the docs (warnings are errors), then the whole suite against a real PostgreSQL pair.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy airflow_provider_fdw/
.venv/bin/sphinx-build -W --keep-going -q -b html docs docs/_build/html
exec .venv/bin/python -m pytest "$@"
