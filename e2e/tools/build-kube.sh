#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager and kubectl v1.34.4 from the Go module proxy into
# ${CONPAAS_CACHE:-~/.cache/conpaas}/kube-v1.34.4/. Skips each binary that exists already.
# The e2e control plane runs the first two with etcd from the etcd-bin-vendored crate; the
# packaging and kubectl-convention tests run this kubectl (never one found on the PATH).
set -euo pipefail

KUBE_VERSION=1.34.4
STAGING_VERSION=0.34.4
cache="${CONPAAS_CACHE:-$HOME/.cache/conpaas}"
out="$cache/kube-v$KUBE_VERSION"
commands=(kube-apiserver kube-controller-manager kubectl)
missing=()
for cmd in "${commands[@]}"; do [[ -x "$out/$cmd" ]] || missing+=("$cmd"); done
if ((${#missing[@]} == 0)); then
  echo "kube binaries present in $out"
  exit 0
fi

work="$cache/kube-build"
mkdir -p "$work" "$out"
cd "$work"

staging=(api apiextensions-apiserver apimachinery apiserver cli-runtime client-go cloud-provider
  cluster-bootstrap code-generator component-base component-helpers controller-manager cri-api
  cri-client csi-translation-lib dynamic-resource-allocation endpointslice externaljwt kms
  kube-aggregator kube-controller-manager kube-proxy kube-scheduler kubectl kubelet metrics
  mount-utils pod-security-admission sample-apiserver sample-cli-plugin sample-controller)

{
  echo "module conpaas.io/kubebuild"
  echo
  echo "go 1.24"
  echo
  echo "require k8s.io/kubernetes v$KUBE_VERSION"
  echo
  for m in "${staging[@]}"; do echo "replace k8s.io/$m => k8s.io/$m v$STAGING_VERSION"; done
} > go.mod

cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO

export GOTOOLCHAIN=local GOFLAGS=-mod=mod CGO_ENABLED=0
go mod tidy
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34"
for cmd in "${missing[@]}"; do
  go build -trimpath -pgo=off -ldflags "$ldflags" -o "$out/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$out/$cmd.tmp" "$out/$cmd"
done
echo "built kube binaries into $out"
