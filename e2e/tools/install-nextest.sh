#!/usr/bin/env bash
# cargo-nextest runs the test binaries side by side (cargo test runs them one after another):
# the e2e tests mostly wait on their own control planes, so the suite takes about half as long.
# Built once from crates.io into ${CONPAAS_CACHE:-~/.cache/conpaas}/nextest-$version (about ten
# minutes cold on two cores), then reused.
set -euo pipefail
version=0.9.151
cache="${CONPAAS_CACHE:-$HOME/.cache/conpaas}"
root="${cache}/nextest-${version}"
if [[ -x "${root}/bin/cargo-nextest" ]]; then
  exit 0
fi
cargo install cargo-nextest --version "${version}" --locked --root "${root}" \
  --target-dir "${cache}/nextest-build"
