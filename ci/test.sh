#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (MariaDB),
# checks formatting and lints, then runs every test. The integration tests
# start their own throwaway mariadbd instances and an in-process S3 server.
#
#   ci/test.sh            # everything
#   ci/test.sh roundtrip  # only tests whose name contains "roundtrip"
set -euo pipefail
cd "$(dirname "$0")/.."

ci/install-deps.sh tests

echo "== cargo fmt --check" >&2
cargo fmt --all -- --check

echo "== cargo clippy" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings

echo "== cargo build (the sandbox binary the example tests run)" >&2
cargo build --quiet -p replseed-testkit --bin replseed-sandbox

echo "== cargo test" >&2
cargo test --workspace --all-targets -- "$@"
