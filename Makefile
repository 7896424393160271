# ringbridge: one entry point for a fresh Debian machine.
#   make serve  -- install what is missing, build the BPF object, run the service
#   make test   -- the same setup, then lint, type-check and the test suite
# Every step is idempotent and quiet when there is nothing to do.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)
# wrk: the benchmark's HTTP load generator, iperf3: its loopback TCP anchor (its
# quick mode runs in the test suite).
# systemd: systemd-analyze and systemd-sysusers check deploy/systemd (make lint);
# util-linux: unshare, setpriv and mount run the unit's install and start in tests.
# nats-server: the fleet tests start their own (JetStream, temp store, loopback).
# Debian's package also enables a service of its own on systemd hosts (127.0.0.1:4222,
# no JetStream); the tests never use it.
APT_PKGS := clang llvm libbpf-dev libbpf1 bpftool gcc make libelf-dev zlib1g-dev linux-libc-dev wrk \
  systemd util-linux nats-server iperf3
# `make image`: the image's base, extra `docker build` flags (e.g. --network host),
# and the wheelhouse the build installs from (filled here with the host's pip).
BASE_IMAGE ?= debian:bookworm-slim
DOCKER ?= docker
DOCKER_BUILD_FLAGS ?=
IMAGE ?= ringbridge
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
WHEELHOUSE := build/wheelhouse
# Extra flags for `make serve`, e.g. make serve ARGS="--port 9000 --drain kick"
ARGS ?=
PYTEST_ARGS ?=

.PHONY: setup deps venv bpf bpffs serve test test-floors lint bench clean wheelhouse image base-image \
  promtool dashboard-png

setup: deps venv bpf bpffs

deps:
	@missing=""; \
	for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing apt packages:$$missing"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

# Installs from constraints/lock.txt: every run, CI's included, gets the
# versions the suite was last run with; pip failures fail the build.
LOCK := constraints/lock.txt
FLOORS := constraints/floors.txt
FLOORS_VENV := .venv-floors

$(VENV)/.installed: pyproject.toml $(LOCK)
	@echo "setup: creating $(VENV) and installing ringbridge with its test extras"
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	@# pip's and setuptools' chatter (editable-install notices, location
	@# warnings) is shown only when the install fails.
	@out=$$($(BIN)/python -m pip install -q --disable-pip-version-check -U pip 2>&1) \
	  || { echo "$$out" >&2; exit 1; }
	@out=$$($(BIN)/python -m pip install -q --disable-pip-version-check -c $(LOCK) -e '.[test]' 2>&1) \
	  || { echo "$$out" >&2; exit 1; }
	@$(BIN)/python -c 'import ringbridge, fastapi, msgspec'
	@touch $@

# The suite on the oldest versions pyproject.toml allows (constraints/floors.txt),
# in its own venv: the floors are tested, not guessed. Not part of `make test`
# (a second install and run); run it when dependencies change.
$(FLOORS_VENV)/.installed: pyproject.toml $(FLOORS)
	@echo "setup: creating $(FLOORS_VENV) with the dependency floors"
	@[ -x $(FLOORS_VENV)/bin/python ] || $(PYTHON) -m venv $(FLOORS_VENV)
	@out=$$($(FLOORS_VENV)/bin/python -m pip install -q --disable-pip-version-check -U pip 2>&1) \
	  || { echo "$$out" >&2; exit 1; }
	@out=$$($(FLOORS_VENV)/bin/python -m pip install -q --disable-pip-version-check -c $(FLOORS) -e '.[test]' 2>&1) \
	  || { echo "$$out" >&2; exit 1; }
	@touch $@

test-floors: deps bpf bpffs $(FLOORS_VENV)/.installed
	$(FLOORS_VENV)/bin/pytest $(PYTEST_ARGS)

bpf:
	@$(MAKE) -s -C bpf OUT=../build

bpffs:
	@mountpoint -q /sys/fs/bpf || { echo "setup: mounting bpffs at /sys/fs/bpf"; $(SUDO) mount -t bpf bpf /sys/fs/bpf; }

serve: setup
	$(BIN)/ringbridge serve $(ARGS)

# mypy checks the package under its import name through this link (see pyproject.toml).
build/typing/ringbridge:
	@mkdir -p build/typing && ln -sfn ../../service $@

# promtool (and prometheus, for `make dashboard-png`) from Debian's prometheus
# package, taken out of the .deb rather than installed: the package's postinst
# adds a user and starts a Prometheus server on :9090, which a lint step has no
# business doing. `apt-get download` needs no root; the index is refreshed
# only when the first try finds nothing.
PROMTOOL := build/tools/promtool
promtool: $(PROMTOOL)
build/tools/promtool build/tools/prometheus:
	@echo "setup: extracting $(@F) from Debian's prometheus package"
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && cd "$$tmp" && \
	  { apt-get download prometheus >/dev/null 2>&1 || \
	    { $(SUDO) apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; } || \
	    { echo "setup: apt-get download prometheus failed" >&2; exit 1; }; } && \
	  dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/$(@F) && \
	  install -D -m 0755 usr/bin/$(@F) "$(CURDIR)/$@"
	@$@ --version >/dev/null

lint: deps venv build/typing/ringbridge $(PROMTOOL)
	$(BIN)/ruff check service tests bench setup.py
	$(BIN)/mypy
	$(BIN)/hadolint --ignore DL3008 Dockerfile
	$(BIN)/yamllint --strict .yamllint deploy tests/deploy/ringbridge-rules.test.yaml
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml
	@# The alerting rules, and their unit tests on synthetic series.
	$(PROMTOOL) check rules deploy/prometheus/ringbridge-rules.yaml
	$(PROMTOOL) test rules tests/deploy/ringbridge-rules.test.yaml
	@# The systemd unit: systemd-analyze verify and security, sysusers.
	.ci/check-unit
	@# The compose file through Compose's own parser, when a Compose is installed
	@# (Debian's docker.io has no compose plugin; docker-compose is its own package).
	@if $(DOCKER) compose version >/dev/null 2>&1; then \
	  $(DOCKER) compose -f deploy/compose.yaml config -q; \
	elif command -v docker-compose >/dev/null; then \
	  docker-compose -f deploy/compose.yaml config -q; \
	else echo "lint: no docker compose here; deploy/compose.yaml checked by yamllint only"; fi

test: setup lint
	$(BIN)/pytest $(PYTEST_ARGS)

# Writes bench/results.{md,json,png}; BENCH_ARGS=--update-readme also rewrites
# README.md's table, BENCH_ARGS=--quick is the smoke run the tests do. The
# `bench` extra brings matplotlib (the plot) and granian (served beside uvicorn).
BENCH_ARGS ?=
bench: setup
	@$(BIN)/python -c 'import matplotlib, granian' 2>/dev/null || \
	  $(BIN)/python -m pip install -q --disable-pip-version-check -c $(LOCK) -e '.[bench]'
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# Every wheel the image needs, at the versions of constraints/lock.txt (the ones
# the suite runs with), fetched by the host's pip (its index, proxy and
# certificates), plus the build backend for ringbridge itself; the
# image builds ringbridge from source. The wheels are for the host's Python,
# which must be the image's minor version (IMAGE_PYTHON: 3.11 on bookworm).
IMAGE_PYTHON ?= 3.11
wheelhouse: venv
	@have=$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	[ "$$have" = "$(IMAGE_PYTHON)" ] || { echo "image: the host's Python is $$have but the" \
	  "image's is $(IMAGE_PYTHON): its wheels would not install (set IMAGE_PYTHON)" >&2; exit 1; }
	@echo "image: filling $(WHEELHOUSE) with the host's pip"
	@rm -rf $(WHEELHOUSE) && mkdir -p $(WHEELHOUSE)
	@# pip's chatter is shown only when it fails.
	@out=$$($(BIN)/python -m pip wheel -q --disable-pip-version-check -c $(LOCK) \
	  -w $(WHEELHOUSE) . 2>&1) \
	  || { echo "$$out" >&2; exit 1; }
	@out=$$($(BIN)/python -m pip download -q --disable-pip-version-check -d $(WHEELHOUSE) \
	  'setuptools>=77' wheel 2>&1) || { echo "$$out" >&2; exit 1; }
	@rm -f $(WHEELHOUSE)/ringbridge-*.whl

image: wheelhouse
	$(DOCKER) build $(DOCKER_BUILD_FLAGS) --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  -t $(IMAGE):$(VERSION) -t $(IMAGE):latest .

# A Debian 12 base image made locally (debootstrap), for hosts that reach no
# image registry: then `make image BASE_IMAGE=ringbridge-base:bookworm`.
base-image:
	@BASE_IMAGE=ringbridge-base:bookworm .ci/docker-engine base >/dev/null

# deploy/grafana/ringbridge.png: the dashboard's queries evaluated by a real
# Prometheus scraping a real service under load, drawn with matplotlib.
dashboard-png: setup build/tools/prometheus
	@$(BIN)/python -c 'import matplotlib' 2>/dev/null || \
	  $(BIN)/python -m pip install -q --disable-pip-version-check -c $(LOCK) -e '.[bench]'
	$(BIN)/python -m bench.dashboard

clean:
	$(MAKE) -s -C bpf OUT=../build clean
	rm -rf $(VENV) $(FLOORS_VENV) .mypy_cache .pytest_cache .ruff_cache dist
