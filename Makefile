# kmod-operator — the commands a developer types. Everything a fresh machine
# needs is installed by `setup` (npm packages including Node 24, Debian's kmod
# and util-linux, the control plane built from Go modules), so `make test` and
# `make run` work on a clean clone.

NODE := node_modules/.bin/node
CLI  := $(NODE) src/cli/main.ts
# One runner invocation for all tests, so the output ends with one summary.
# Files run one at a time: each integration file starts its own control plane.
# test/e2e/ is not among them: `make e2e` runs it (it needs a container runtime).
TESTS := 'src/**/*.test.ts' 'test/*.test.ts' 'test/kube/*.test.ts' 'test/support/*.test.ts' 'scripts/*.test.ts'
# node:test's spec output, plus: with CI=true a skipped test fails the run (a missing tool or
# privilege must not turn into a green run); TEST_RESULTS=path writes the counts and time there.
REPORTER := --test-reporter=./scripts/test-reporter.ts

.PHONY: setup deps debs controlplane bundle typecheck lint format unit integration test stress-test each-test e2e-deps e2e run cluster cluster-down clean install-plugin bench soak

setup: deps debs controlplane

# npm ci installs the locked tree, including the `node` package (Node 24 LTS):
# npm scripts and this Makefile run that Node, not the machine's.
deps: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# modprobe/depmod (kmod) run in local mode's dry-run, against demo modules built with
# the C compiler (gcc); setpriv (util-linux) restricts the helper; strace is the agent's
# tracer (the kernel's errno for a refused module call); tini is the image's PID 1,
# which test/hardening.test.ts runs as PID 1 of a namespace of its own.
debs:
	@missing=""; \
	for tool in modprobe:kmod depmod:kmod setpriv:util-linux cc:gcc strace:strace tini:tini; do \
		cmd=$${tool%%:*}; pkg=$${tool#*:}; \
		PATH="$$PATH:/sbin:/usr/sbin" command -v $$cmd >/dev/null 2>&1 || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		if [ "$$(id -u)" != 0 ]; then echo "need root (or: sudo apt-get install$$missing)" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

controlplane:
	@bash test/cluster/build.sh >/dev/null

# The one JavaScript file the image runs (esbuild; see scripts/bundle.ts and the Dockerfile).
bundle: deps
	$(NODE) scripts/bundle.ts

typecheck: deps
	$(NODE) node_modules/.bin/tsc --noEmit

lint: deps
	$(NODE) node_modules/.bin/eslint .
	$(NODE) node_modules/.bin/prettier --check .

format: deps
	$(NODE) node_modules/.bin/prettier --write .

# Unit tests only: no control plane is built or started (test/support/cluster.ts refuses to
# start one under KMOD_UNIT_TESTS; tests that need it live in test/).
unit: deps
	KMOD_UNIT_TESTS=1 $(NODE) --test $(REPORTER) 'src/**/*.test.ts' 'scripts/*.test.ts'

integration: setup
	$(NODE) --test $(REPORTER) --test-concurrency=1 'test/*.test.ts' 'test/kube/*.test.ts' 'test/support/*.test.ts'

test: setup typecheck lint
	$(NODE) --test $(REPORTER) --test-concurrency=1 --test-timeout=300000 $(TESTS)

# Every test of FILES run alone (--test-name-pattern), one process each: finds tests that
# depend on objects another test left. E.g. make each-test FILES=test/operator.test.ts
each-test: setup
	$(NODE) scripts/each-test.ts $(FILES)

# `make test` three times in a row under `stress-ng --cpu 2` (installed if missing); stress-ng
# is stopped at the end, also when a run fails. See scripts/stress-test.sh.
stress-test: setup
	bash scripts/stress-test.sh

# The end-to-end suite: the image built from the Dockerfile (on a base made
# here with debootstrap, by buildah), a real node (Debian's containerd + runc,
# the kubelet), the chart installed with Helm; then the real-kernel tier: a
# QEMU VM running Debian's kernel joins a cluster as a node and modules are
# loaded into it for real (test/e2e/vm.test.ts). Installs what it lacks
# (test/e2e/deps.sh); runs in a network namespace of its own and removes
# everything it started.
e2e-deps:
	@bash test/e2e/deps.sh

e2e: setup e2e-deps
	bash test/e2e/run.sh

# The operator's local mode: control plane, CRDs, a Node for this machine,
# controller, one agent, the examples; Ctrl-C stops everything.
run: setup
	$(CLI) local

cluster: setup
	$(CLI) cluster up

cluster-down: deps
	$(CLI) cluster down

# `kubectl modprobe`: kubectl runs any kubectl-NAME on PATH as `kubectl NAME`, and asks
# kubectl_complete-NAME for shell completion. Links both into $(PREFIX)/bin (default
# ~/.local/bin); they run this checkout's sources with its Node 24.
PREFIX ?= $(HOME)/.local
install-plugin: deps
	mkdir -p $(PREFIX)/bin
	ln -sf $(CURDIR)/bin/kubectl-modprobe $(CURDIR)/bin/kubectl_complete-modprobe $(PREFIX)/bin/
	@case ":$$PATH:" in *":$(PREFIX)/bin:"*) ;; *) echo "add $(PREFIX)/bin to PATH: export PATH=\"$(PREFIX)/bin:\$$PATH\"";; esac

clean:
	rm -rf .local node_modules dist

# Benchmarks against the floor (`make test` runs them only with tiny sizes, test/bench.test.ts):
# prints a table, writes bench/results.json.
# BENCH_SCALE=small (default) is a quick run; BENCH_SCALE=full the sizes of issue 10 (long).
# BENCH_RESULTS=path writes the results elsewhere (test/bench.test.ts does, into a temp dir).
BENCH_SCALE ?= small
bench: setup
	BENCH_SCALE=$(BENCH_SCALE) $(NODE) bench/bench.ts

# A steady stream of requests with faults injected at random (seeded): SOAK_SECONDS (600),
# SOAK_SEED (1), SOAK_FAULT_SECONDS (30), SOAK_NODES (3). `make test` runs it for 8 s only.
soak: setup
	$(NODE) bench/soak.ts
