# natter: `make dev` runs everything on loopback, `make test` runs every test.
SHELL   := /bin/bash
GO      ?= go
BIN     := $(CURDIR)/bin
MODULES := services auth presence gateway deploy
# Every package of every module of the workspace (go.work).
PKGS     = $(addsuffix /...,$(addprefix ./,$(MODULES)))
# axe-core, injected into the page by the browser tests
AXE     := services/e2e/node_modules/axe-core/axe.min.js

.PHONY: all build dev test check-prereqs lint bench bench-peers chaos clean

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

## bench-peers: natter side by side with Centrifugo v6.9.1 and a naive hub,
## same load tool, same run, interleaved (PEERS_DIR: the side-by-side bench,
## ../shared/bench by default; its knobs NS, RATES, REPS, TARGETS pass
## through). Centrifugo is built with go install when missing (about 6
## minutes cold). natter runs its own stack with send limits raised.
PEERS_DIR      ?= $(abspath $(CURDIR)/../shared/bench)
CENTRIFUGO_BIN ?= $(CURDIR)/.bench/centrifugo-bin/centrifugo
bench-peers: build
	@test -x "$(PEERS_DIR)/side-by-side.sh" || { echo "bench-peers: no side-by-side bench at PEERS_DIR=$(PEERS_DIR)"; exit 1; }
	@test -x "$(CENTRIFUGO_BIN)" || GOBIN="$(dir $(CENTRIFUGO_BIN))" GOWORK=off $(GO) install github.com/centrifugal/centrifugo/v6@v6.9.1
	CENTRIFUGO_BIN="$(CENTRIFUGO_BIN)" NATTER_DIR="$(CURDIR)" \
	  USER_SENDS_PER_MINUTE=1000000000 USER_BYTES_PER_HOUR=1000000000000 SOCKETS_PER_USER=100000 \
	  "$(PEERS_DIR)/side-by-side.sh"

## chaos: the fault suite at full size (services/chaos; under 20 minutes):
## kill, pause and cut every part under load, then print a table of what
## was lost, duplicated or out of order (also in CHAOS_REPORT); every
## scenario logs its seed (CHAOS_SEED=<n> replays it). `make test` runs
## the short version of scenarios 1, 2, 5 and 7.
CHAOS_REPORT ?= $(CURDIR)/.chaos/report.md
chaos: build
	@mkdir -p $(dir $(CHAOS_REPORT))
	cd services && CHAOS=full CHAOS_REPORT=$(CHAOS_REPORT) NATTER_BIN=$(BIN) $(GO) test -tags chaos -count=1 -timeout 20m -v -run '^TestChaos' ./chaos/ \
		| grep -E '^(=== RUN|--- |\s+(chaos(_full)?_test\.go|note:)|PASS|FAIL|ok)|^\|' ; status=$${PIPESTATUS[0]}; \
		echo; cat $(CHAOS_REPORT) 2>/dev/null; exit $$status

clean:
	rm -rf $(BIN)
