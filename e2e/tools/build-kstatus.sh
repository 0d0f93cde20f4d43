#!/usr/bin/env bash
# Builds the kstatus checker (e2e/tools/kstatus: sigs.k8s.io/cli-utils' kstatus, as Flux and kpt
# use it) from the Go module proxy into ${CONPAAS_CACHE:-~/.cache/conpaas}/kstatus-v$VERSION/.
# Skips the build when the binary exists. The e2e tests judge Services with it.
set -euo pipefail

VERSION=0.37.2
cache="${CONPAAS_CACHE:-$HOME/.cache/conpaas}"
out="$cache/kstatus-v$VERSION"
if [[ -x "$out/kstatus" ]]; then
  echo "kstatus present in $out"
  exit 0
fi
mkdir -p "$out"
cd "$(dirname "$0")/kstatus"
GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -o "$out/kstatus.tmp" .
mv "$out/kstatus.tmp" "$out/kstatus"
echo "built kstatus into $out"
