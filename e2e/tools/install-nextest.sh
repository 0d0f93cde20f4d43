#!/usr/bin/env bash
# cargo-nextest runs the test binaries side by side (cargo test runs them one after another):
# the e2e tests mostly wait on their own control planes, so the suite takes about half as long.
# Built once from crates.io into ~/.cache/conpaas/nextest (a few minutes cold), then reused.
set -euo pipefail
version=0.9.151
root="${HOME}/.cache/conpaas/nextest-${version}"
if [[ -x "${root}/bin/cargo-nextest" ]]; then
  exit 0
fi
cargo install cargo-nextest --version "${version}" --locked --root "${root}" \
  --target-dir "${HOME}/.cache/conpaas/nextest-build"
