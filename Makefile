# natter: `make dev` runs everything on loopback, `make test` runs every test.
SHELL   := /bin/bash
GO      ?= go
BIN     := $(CURDIR)/bin
MODULES := services auth presence gateway deploy
# Every package of every module of the workspace (go.work).
PKGS     = $(addsuffix /...,$(addprefix ./,$(MODULES)))
# axe-core, injected into the page by the browser tests
AXE     := services/e2e/node_modules/axe-core/axe.min.js

.PHONY: all build dev test check-prereqs lint bench clean

all: build

## build: compile every binary into bin/
build:
	cd services && $(GO) build -o $(BIN)/ ./cmd/devstack ./cmd/devrun ./cmd/natter-bench github.com/nats-io/nats-server/v2
	cd auth && $(GO) build -o $(BIN)/auth .
	cd presence && $(GO) build -o $(BIN)/presence .
	cd gateway && $(GO) build -o $(BIN)/gateway .

## dev: build, then run the dev stack and all services in this terminal (Ctrl-C stops all)
dev: build
	exec $(BIN)/devrun

## test: every test of every module, with the race detector
test: check-prereqs build $(AXE)
	NATTER_BIN=$(BIN) $(GO) test -race -count=1 -timeout 25m $(PKGS)

## axe-core for the browser tests' accessibility checks, at the version
## pinned in services/e2e/package-lock.json (fetched from the npm registry)
$(AXE): services/e2e/package.json services/e2e/package-lock.json
	npm ci --prefix services/e2e --no-audit --no-fund
	@touch $@

## check-prereqs: what make test needs besides Go (chromium or CHROMIUM,
## docker-compose, node, npm); for each one missing, print the Debian
## package line that installs it, then fail before anything is built
check-prereqs:
	@missing=0; \
	need() { echo "make test needs $$1 ($$2): apt-get install -y $$3"; missing=1; }; \
	[ -x "$(CHROMIUM)" ] || [ -x /usr/bin/chromium ] || [ -x /usr/bin/chromium-browser ] || \
		need chromium "the browser tests; or set CHROMIUM to a Chromium binary" chromium; \
	command -v docker-compose >/dev/null || need docker-compose "checks deploy/compose.yaml; no Docker engine needed" "--no-install-recommends docker-compose"; \
	command -v node >/dev/null || need node "npm runs on it" nodejs; \
	command -v npm >/dev/null || need npm "installs axe-core for the browser tests" npm; \
	if [ $$missing = 1 ]; then echo "(as root, after apt-get update; see README.md, On a fresh machine)"; exit 1; fi

## lint: gofmt, go vet and staticcheck on every module
lint:
	@unformatted=$$(gofmt -l $(MODULES)); if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet $(PKGS)
	cd services && $(GO) tool staticcheck $(addprefix github.com/natter/natter/,$(addsuffix /...,$(MODULES)))

## bench: Go micro-benchmarks of the hot paths (5 runs each, kept in BENCH_OUT; BENCH_BASE=<earlier file> compares with benchstat), then the standard load profile on a fresh stack
BENCH_OUT ?= $(CURDIR)/.bench/micro.txt
bench: build
	@mkdir -p $(dir $(BENCH_OUT))
	set -o pipefail; $(GO) test -run '^$$' -bench . -benchmem -count 5 $(PKGS) | tee $(BENCH_OUT)
	@if [ -n "$(BENCH_BASE)" ]; then cd services && $(GO) tool benchstat $(abspath $(BENCH_BASE)) $(abspath $(BENCH_OUT)); fi
	bash services/bench.sh

clean:
	rm -rf $(BIN)
