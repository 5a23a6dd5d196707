#!/usr/bin/env bash
# Installs what replseed needs on a fresh Debian/Ubuntu machine: MariaDB
# (server and client) always; with `tests`, openssl and pyarrow and DuckDB (pip); with
# `bench`, mydumper, sysbench and mariadb-backup. Safe to run again: it
# installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
# The TLS tests make their CA and certificates with openssl.
[[ " $* " == *" tests "* ]] && ! command -v openssl >/dev/null 2>&1 && missing+=(openssl)
for extra in "$@"; do
  case "$extra" in
    bench)
      command -v mydumper >/dev/null 2>&1 || missing+=(mydumper)
      command -v sysbench >/dev/null 2>&1 || missing+=(sysbench)
      command -v mariadb-backup >/dev/null 2>&1 || missing+=(mariadb-backup)
      ;;
  esac
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# pyarrow and DuckDB, for the tests: they check that other tools read a snapshot.
if [[ " $* " == *" tests "* ]] && ! python3 -c "import pyarrow, duckdb" >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  fi
  echo "installing: pyarrow duckdb (pip)" >&2
  python3 -m pip install --quiet pyarrow duckdb 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pyarrow duckdb
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
