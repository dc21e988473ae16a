# kmod-operator — the commands a developer types. Everything a fresh machine
# needs is installed by `setup` (npm packages including Node 24, Debian's kmod
# and util-linux, the control plane built from Go modules), so `make test` and
# `make run` work on a clean clone.

NODE := node_modules/.bin/node
CLI  := $(NODE) src/cli/main.ts
# One runner invocation for all tests, so the output ends with one summary.
# Files run one at a time: each integration file starts its own control plane.
TESTS := 'src/**/*.test.ts' 'test/**/*.test.ts'

.PHONY: setup deps debs controlplane typecheck lint format unit integration test run cluster cluster-down clean bench soak

setup: deps debs controlplane

# npm ci installs the locked tree, including the `node` package (Node 24 LTS):
# npm scripts and this Makefile run that Node, not the machine's.
deps: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# modprobe/depmod (kmod) run in local mode's dry-run, against demo modules built with
# the C compiler (gcc); setpriv (util-linux) restricts the helper.
debs:
	@missing=""; \
	for tool in modprobe:kmod depmod:kmod setpriv:util-linux cc:gcc; do \
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

typecheck: deps
	$(NODE) node_modules/.bin/tsc --noEmit

lint: deps
	$(NODE) node_modules/.bin/eslint .
	$(NODE) node_modules/.bin/prettier --check .

format: deps
	$(NODE) node_modules/.bin/prettier --write .

unit: deps
	$(NODE) --test --test-reporter=spec 'src/**/*.test.ts'

integration: setup
	$(NODE) --test --test-reporter=spec --test-concurrency=1 'test/**/*.test.ts'

test: setup typecheck lint
	$(NODE) --test --test-reporter=spec --test-concurrency=1 --test-timeout=300000 $(TESTS)

# The operator's local mode: control plane, CRDs, a Node for this machine,
# controller, one agent, the examples; Ctrl-C stops everything.
run: setup
	$(CLI) local

cluster: setup
	$(CLI) cluster up

cluster-down: deps
	$(CLI) cluster down

clean:
	rm -rf .local node_modules

# Benchmarks against the floor (not part of `make test`): prints a table, writes bench/results.json.
# BENCH_SCALE=small (default) is a quick run; BENCH_SCALE=full the sizes of issue 10 (long).
BENCH_SCALE ?= small
bench: setup
	BENCH_SCALE=$(BENCH_SCALE) $(NODE) bench/bench.ts

# A steady stream of requests with faults injected at random (seeded): SOAK_SECONDS (600),
# SOAK_SEED (1), SOAK_FAULT_SECONDS (30), SOAK_NODES (3). Not part of `make test`.
soak: setup
	$(NODE) bench/soak.ts
