# The front door: CI and people run the same recipes.
#   make run    ConPaaS on this machine (local control plane, controller, local cloud, helloworld)
#   make test   every test: unit, driver conformance, e2e against a real API server
export CARGO_TARGET_DIR ?= $(HOME)/.cache/conpaas/target
CARGO ?= cargo

.PHONY: run test build kube crds lint bench scale-bench

kube:
	e2e/tools/build-kube.sh

build:
	$(CARGO) build --workspace --bins

run: kube build
	$(CARGO_TARGET_DIR)/debug/conpaas-devcluster

test: kube build
	$(CARGO) test --workspace --no-fail-fast

crds:
	$(CARGO) run -q -p conpaas-crds --bin crdgen

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: kube
	$(CARGO) build --workspace --bins --release
	$(CARGO_TARGET_DIR)/release/conpaas-bench

scale-bench: kube
	$(CARGO) build --workspace --bins --release
	$(CARGO_TARGET_DIR)/release/conpaas-scale-bench
