#!/usr/bin/env bash
# Builds helm from the Go module proxy into ${CONPAAS_CACHE:-~/.cache/conpaas}/helm-v$HELM_VERSION/.
# Skips the build when the binary exists. The chart tests (helm lint, helm template) run it.
set -euo pipefail

HELM_VERSION=4.3.1
cache="${CONPAAS_CACHE:-$HOME/.cache/conpaas}"
out="$cache/helm-v$HELM_VERSION"
if [[ -x "$out/helm" ]]; then
  echo "helm present in $out"
  exit 0
fi
mkdir -p "$out"
GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$out/bin.tmp" go install -trimpath "helm.sh/helm/v4/cmd/helm@v$HELM_VERSION"
mv "$out/bin.tmp/helm" "$out/helm"
rmdir "$out/bin.tmp"
echo "built helm into $out"
