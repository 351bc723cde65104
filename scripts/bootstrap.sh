#!/usr/bin/env bash
# Install what a fresh machine lacks: PostgreSQL server binaries with contrib (postgres_fdw) from
# Debian's packages, and a virtualenv (.venv) with this package and its test extras. Idempotent:
# a machine that has everything spends a few seconds here.
set -euo pipefail
cd "$(dirname "$0")/.."

# Server binaries (initdb, pg_ctl) and the postgres_fdw extension files next to them.
have_pg_server() {
  local dir
  for dir in "${FDW_PG_BINDIR:-}" "$(pg_config --bindir 2>/dev/null || true)" /usr/lib/postgresql/*/bin; do
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/pg_config" ] || continue
    [ -f "$("$dir/pg_config" --sharedir)/extension/postgres_fdw.control" ] && return 0
  done
  return 1
}

apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "bootstrap: missing Debian packages ($*); run as root or install them" >&2
    exit 1
  fi
  # Do not let the Debian package create and start its own cluster on port 5432.
  mkdir -p /etc/postgresql-common
  grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
    echo 'create_main_cluster = false' >> /etc/postgresql-common/createcluster.conf
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! have_pg_server; then
  echo "bootstrap: installing PostgreSQL server + contrib"
  apt_install postgresql postgresql-contrib
fi

# Headless Chromium for the connection-form browser test (Debian's build: no browser download).
if [ ! -x /usr/bin/chromium ]; then
  echo "bootstrap: installing chromium and chromium-driver"
  apt_install chromium chromium-driver
fi

# Redis as the Celery broker of the deployment test tier (started by the tests on a free port).
if ! command -v redis-server >/dev/null && [ ! -x /usr/bin/redis-server ]; then
  echo "bootstrap: installing redis-server"
  apt_install redis-server
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.fdw-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing the package and its test extras into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  # CPU torch pinned first: the embeddings extra would otherwise pull the newest CUDA build.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e '.[test,embeddings,docs,deploy]'
  touch "$stamp"
fi
