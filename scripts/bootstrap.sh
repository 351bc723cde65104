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

# ---- BEGIN pgvector (engineer E) -------------------------------------------------------------------
# pgvector for the vector(n) tests and the demo. Debian bookworm has no package for PostgreSQL 15, but
# trixie's source package (0.8.0) builds against postgresql-server-dev-15 in seconds. Only when the
# server lacks vector.control; the deb-src entry reuses the mirror and keyring of this machine's own
# Debian sources, so no new host or key is trusted.
install_pgvector() {
  local pg_config="$1" sources=/etc/apt/sources.list.d/fdw-trixie-src.sources uri keyring work
  if [ ! -f "$sources" ]; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    keyring=$(awk '/^Signed-By:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$uri" ] || uri=$(awk '$1 == "deb" && $0 !~ /security/ {print ($2 ~ /^\[/) ? $3 : $2; exit}' \
      /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$uri" ] || { echo "bootstrap: no Debian mirror found in the apt sources" >&2; return 1; }
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: %s\n' \
      "$uri" "${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}" > "$sources"
  fi
  apt_install "postgresql-server-dev-$("$pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')" dpkg-dev
  work=$(mktemp -d)
  # _apt downloads into the directory: let it write there.
  chmod 755 "$work"
  (
    cd "$work"
    apt-get source -qq pgvector >/dev/null 2>&1 || apt-get source -q pgvector
    cd pgvector-*/
    # with_llvm=no: the JIT bitcode needs clang, which the build does not otherwise need.
    make -s -j"$(nproc)" PG_CONFIG="$pg_config" with_llvm=no >/dev/null
    make -s PG_CONFIG="$pg_config" with_llvm=no install >/dev/null
  )
  rm -rf "$work"
}

pgvector_pg_config() {
  local dir
  for dir in "${FDW_PG_BINDIR:-}" /usr/lib/postgresql/*/bin; do
    [ -n "$dir" ] && [ -x "$dir/pg_config" ] && [ -x "$dir/initdb" ] && echo "$dir/pg_config" && return 0
  done
  return 1
}

if pg_config_bin=$(pgvector_pg_config) && [ ! -f "$("$pg_config_bin" --sharedir)/extension/vector.control" ]; then
  echo "bootstrap: building pgvector from Debian trixie's source package"
  install_pgvector "$pg_config_bin"
fi
# ---- END pgvector ----------------------------------------------------------------------------------
# ---- BEGIN mysql_fdw (engineer C) ------------------------------------------------------------------
# MariaDB server binaries (mariadb-install-db, mariadbd) for fdw_testing/mariadb.py, which starts its own
# private server; and mysql_fdw for the PostgreSQL version whose binaries the harness uses. A policy-rc.d
# that forbids service starts keeps the Debian package from starting a system-wide MariaDB on 3306.
mysql_fdw_pg_major() {
  local dir
  for dir in "${FDW_PG_BINDIR:-}" /usr/lib/postgresql/*/bin; do
    [ -n "$dir" ] && [ -x "$dir/pg_config" ] && [ -x "$dir/initdb" ] || continue
    "$dir/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/'
    return 0
  done
  return 1
}

install_mysql_fdw_deps() {
  local packages=() major policy=/usr/sbin/policy-rc.d added_policy=0
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || packages+=(mariadb-server)
  # zone files for mariadb-tzinfo-to-sql (tests/test_mysql_session_settings.py loads a DST zone)
  [ -f /usr/share/zoneinfo/Europe/Amsterdam ] || packages+=(tzdata)
  if major=$(mysql_fdw_pg_major) && [ ! -f "/usr/share/postgresql/$major/extension/mysql_fdw.control" ]; then
    packages+=("postgresql-$major-mysql-fdw")
  fi
  [ "${#packages[@]}" -gt 0 ] || return 0
  echo "bootstrap: installing ${packages[*]}"
  if [ "$(id -u)" = 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
  fi
  apt_install "${packages[@]}"
  [ "$added_policy" = 0 ] || rm -f "$policy"
}
install_mysql_fdw_deps
# ---- END mysql_fdw ---------------------------------------------------------------------------------
# PgBouncer for tests/test_pooler.py (each test starts its own pgbouncer on a free port; the Debian
# package's service is kept from starting).
if ! command -v pgbouncer >/dev/null && [ ! -x /usr/sbin/pgbouncer ]; then
  echo "bootstrap: installing pgbouncer"
  policy=/usr/sbin/policy-rc.d added_policy=0
  if [ "$(id -u)" = 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && added_policy=1
  fi
  apt_install pgbouncer
  [ "$added_policy" = 0 ] || rm -f "$policy"
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
