# The front door: CI and people run the same recipes.
#   make run    ConPaaS on this machine (local control plane, controller, local cloud, helloworld)
#   make test   every test: unit, driver conformance, e2e against a real API server
export CARGO_TARGET_DIR ?= $(HOME)/.cache/conpaas/target
CARGO ?= cargo
# The full test also builds the EC2 driver (aws-sdk-ec2: minutes of cold compile, then cached);
# `make build` and `make run` leave it out.
TEST_FEATURES = conpaas-controller/ec2,conpaas-cloud/ec2,conpaas-cloud/opennebula,conpaas-e2e/ec2

NEXTEST ?= $(or $(CONPAAS_CACHE),$(HOME)/.cache/conpaas)/nextest-0.9.151/bin/cargo-nextest

.PHONY: run test build deps kube helm kstatus nextest crds install-yaml lint bench scale-bench code-bench web-bench ec2-bench fs-bench kv-bench

# Python packages the tests use (pyone, moto), installed only when missing.
deps:
	e2e/tools/install-deps.sh

kube:
	e2e/tools/build-kube.sh

helm:
	e2e/tools/build-helm.sh

# Runs the test binaries side by side (.config/nextest.toml).
nextest:
	e2e/tools/install-nextest.sh

# sigs.k8s.io/cli-utils' kstatus (as Flux and kpt judge objects), for the e2e tests.
kstatus:
	e2e/tools/build-kstatus.sh

build:
	$(CARGO) build --workspace --bins

run: kube build
	$(CARGO_TARGET_DIR)/debug/conpaas-devcluster

test: deps kube helm kstatus nextest
	$(CARGO) build --workspace --bins --features $(TEST_FEATURES)
	$(NEXTEST) nextest run --workspace --features $(TEST_FEATURES)

# The CRDs, generated from crds/src into manifests/crds and the chart's crds folder, the service
# types' page (docs/service-types.md) from their descriptors, and the plain install manifest rendered from the chart. Tests fail when any of them is stale.
crds:
	$(CARGO) run -q -p conpaas-crds --bin crdgen manifests/crds
	$(CARGO) run -q -p conpaas-crds --bin crdgen charts/conpaas/crds
	$(CARGO) run -q -p conpaas-crds --bin crdgen -- --docs docs/service-types.md

install-yaml: helm
	e2e/tools/render-install.sh > manifests/install.yaml

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

bench: kube
	$(CARGO) build --workspace --bins --release
	$(CARGO_TARGET_DIR)/release/conpaas-bench

scale-bench: kube
	$(CARGO) build --workspace --bins --release --features conpaas-controller/memory-cloud
	$(CARGO_TARGET_DIR)/release/conpaas-scale-bench

code-bench: kube
	$(CARGO) build --workspace --bins --release
	e2e/tools/code-bench.sh $(CARGO_TARGET_DIR)/release

# GlusterFS through the filesystem service's commands: MB/s through a mount against the disk,
# and the time to drain a node's brick (root; `make fs-bench GB=2`).
fs-bench:
	e2e/tools/fs-bench.sh $(GB)

# kvstore: requests/s through 3 and 5 masters, and the drain of a master holding a third of KEYS.
kv-bench:
	e2e/tools/kv-bench.sh $(KEYS)

web-bench: kube
	$(CARGO) build --workspace --bins --release
	$(CARGO_TARGET_DIR)/release/conpaas-web-bench

ec2-bench: deps kube
	$(CARGO) build --workspace --bins --release --features $(TEST_FEATURES)
	$(CARGO_TARGET_DIR)/release/conpaas-ec2-bench
