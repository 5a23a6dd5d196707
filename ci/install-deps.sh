#!/usr/bin/env bash
# Installs what replseed's tests, quickstart and examples need on a fresh
# Debian/Ubuntu machine: MariaDB (server and client). The benchmark needs
# more (see ci/bench.sh). Safe to run again: it installs only what is missing.
set -euo pipefail

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

missing=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
command -v mariadb >/dev/null 2>&1 || missing+=(mariadb-client)
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
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is missing: install Rust (https://rustup.rs) and run again" >&2
  exit 1
fi
