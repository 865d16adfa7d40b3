# RouteIQ — two commands on a fresh machine: `make setup`, then `make test`. `make run` starts a local pod.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PACKAGES := -e 'shared[ml]' -e gateway -e config_sync_agent -e model_sync_agent -e 'train[mlflow]'
# Debian packages: redis-server and postgresql (15, the system of record for keys) for tests and the local pod; nginx and wrk for bench/; prometheus for promtool
# (the chart's alert rules are checked and unit-tested with it); chromium, headless, drives the admin page's test over its DevTools protocol.
SYSTEM_PACKAGES := redis-server redis-sentinel postgresql nginx wrk prometheus chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Images (make images / make images-test): Debian's podman 4.3 with runc, mmdebstrap for the base image.
IMAGE_TOOLS := podman runc mmdebstrap uidmap fuse-overlayfs
IMAGE_VERSION := $(shell sed -n 's/^appVersion: *"\(.*\)"/\1/p' charts/routeiq/Chart.yaml)
BASE_IMAGE ?= localhost/routeiq/python-base:3.11-bookworm
# The CA bundle pip trusts while building (a build secret, in no layer): the host's, so a TLS-inspecting proxy or a
# private index the host trusts works in the build too.
PIP_CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
# images/containers.conf: runc, and no default ulimits (see the file for why).
export CONTAINERS_CONF := $(CURDIR)/images/containers.conf
# Per-build OCI labels as --label, not as build args in a LABEL step (buildah would reuse that step from cache).
IMAGE_BUILD_ARGS = --build-arg BASE_IMAGE=$(BASE_IMAGE) --label org.opencontainers.image.version=$(IMAGE_VERSION) \
  --label org.opencontainers.image.revision=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
  --label org.opencontainers.image.created=$$(date -u +%Y-%m-%dT%H:%M:%SZ) \
  $(if $(PIP_INDEX_URL),--build-arg PIP_INDEX_URL=$(PIP_INDEX_URL)) --secret id=pip-ca,src=$(PIP_CA_BUNDLE)

.PHONY: setup system-deps venv lock test lint format run bench bench-litellm soak-slowloris schema clean chart-tools chart-test images-tools images images-test

setup: system-deps venv  ## install everything: Debian packages, the venv, the four packages, dev tools

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi

venv:  ## third-party packages from requirements.lock, hash-checked; then the four packages themselves, no deps
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes --no-deps -r requirements.lock
	$(PY) -m pip install -q --no-deps $(PACKAGES) -e '.[dev]'
	$(PY) -m pip check

# The packages and the versions the venv holds, resolved by uv into a lock with every file's sha256 (all platforms
# of each pinned version, so an image for another architecture installs from the same lock).
LOCK_IN := -e ./shared[ml]\n-e ./gateway\n-e ./config_sync_agent\n-e ./model_sync_agent\n-e ./train[mlflow]\n-e .[dev]\n
lock:  ## re-pin requirements.lock (after changing a dependency in a pyproject.toml: pip install it first)
	$(PY) -m pip install -q $(PACKAGES) -e '.[dev]'
	@tmp=$$(mktemp -d); printf -- '$(LOCK_IN)' > $$tmp/lock.in; \
	$(PY) -m pip freeze --exclude-editable | grep -v '^routeiq' > $$tmp/pins.txt; \
	$(BIN)/uv pip compile $$tmp/lock.in -c $$tmp/pins.txt --generate-hashes --python-version 3.11 \
	  --no-header --no-annotate --quiet -o $$tmp/lock.out && \
	{ echo "# Every third-party package, pinned with its files' sha256 (make setup installs with --require-hashes)."; \
	  echo "# Regenerate after changing a dependency: make lock"; \
	  grep -v '^-e ' $$tmp/lock.out; } > requirements.lock; \
	for svc in gateway config_sync_agent model_sync_agent; do \
	  extra=$$( [ $$svc = gateway ] && echo '[ml]' ); \
	  printf -- "-e ./shared$$extra\n-e ./$$svc\n" > $$tmp/$$svc.in; \
	  $(BIN)/uv pip compile $$tmp/$$svc.in -c requirements.lock --generate-hashes --python-version 3.11 \
	    --no-header --no-annotate --quiet -o $$tmp/$$svc.out && \
	  { echo "# $$svc's image: its third-party packages, a subset of requirements.lock (make lock writes both)."; \
	    grep -v '^-e ' $$tmp/$$svc.out; } > $$svc/requirements.lock; \
	done; rm -rf $$tmp

test: lint  ## lint, then every test (unit, integration over loopback, and tests/chart = make chart-test)
	$(PY) -m pytest

chart-tools:  ## the chart's tools alone: promtool (Debian's prometheus), Helm's engine and kubernetes-validate (PyPI)
	@$(MAKE) --no-print-directory system-deps SYSTEM_PACKAGES=prometheus
	$(PY) -m pip install -q -c requirements.lock 'helm-python-sdk>=0.2.2' 'kubernetes-validate>=1.29'

chart-test:  ## charts/routeiq: lint, render 5 value sets, validate for k8s 1.29/1.32, contracts, alerts, live metrics
	$(PY) -m pytest -q tests/chart

lint:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format:
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

run:  ## a local pod on embedded defaults: demo provider, gateway on :4000 (Ctrl-C stops it all)
	$(PY) scripts/local_pod.py

images-tools:  ## podman, runc and mmdebstrap from Debian's packages (only for make images / images-test)
	@$(MAKE) --no-print-directory system-deps SYSTEM_PACKAGES="$(IMAGE_TOOLS)"

images: images-tools  ## the base image from Debian packages (once), then gateway, config-sync and model-sync images
	images/python-base.sh $(BASE_IMAGE)
	podman build $(IMAGE_BUILD_ARGS) -f gateway/Dockerfile -t localhost/routeiq/gateway:$(IMAGE_VERSION) .
	podman build $(IMAGE_BUILD_ARGS) -f config_sync_agent/Dockerfile -t localhost/routeiq/config-sync:$(IMAGE_VERSION) .
	podman build $(IMAGE_BUILD_ARGS) -f model_sync_agent/Dockerfile -t localhost/routeiq/model-sync:$(IMAGE_VERSION) .
	@podman images --filter reference='localhost/routeiq/*' --format '{{.Repository}}:{{.Tag}} {{.Size}}'

images-test: images  ## smoke-test the images, moat mode (no network), the chart's pod under podman kube play (not in CI)
	ROUTEIQ_IMAGES_TEST=1 $(PY) -m pytest -q tests/images

bench:  ## throughput: direct vs RouteIQ vs LiteLLM's proxy (see bench/README.md)
	$(PY) bench/proxy_throughput.py

soak-slowloris:  ## normal traffic's p99 with 300 idle connections and 20 slowloris clients (not in CI)
	$(PY) bench/slowloris.py

bench-litellm:  ## LiteLLM's proxy in its own venv, for `make bench`
	bash bench/setup_litellm.sh

schema:  ## regenerate the checked-in JSON Schema from the pydantic models
	$(PY) -m routeiq_shared.schema_gen

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache */*.egg-info
