# The operator image (controller and agent). It runs one bundled, minified
# JavaScript file built from the TypeScript sources by scripts/bundle.ts
# (esbuild): a standalone agent idles at ~86 MiB from it against ~165 MiB
# from the sources (bench/RESULTS.md says where the difference goes), and the
# image needs no node_modules.
# BASE: the public image users build on; the end-to-end suite (make e2e)
# passes a base made locally with the same layout (Debian bookworm, Node 24
# and npm in /usr/local), since no registry is reachable there.
ARG BASE=node:24-bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Dev dependencies included: esbuild is one. No install scripts: esbuild's
# binary comes in its platform package, and the `node` package's download is
# not needed (the base has Node 24).
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
COPY scripts/bundle.ts ./scripts/
RUN node scripts/bundle.ts

FROM ${BASE}
# kmod: modprobe. util-linux: setpriv (the helper's capabilities) and dmesg (the kernel's
# reason for a refused load). strace: the errno of the module system call the kernel refused
# (modprobe -q prints nothing; the agent's --tracer).
RUN apt-get update \
 && apt-get install -y --no-install-recommends kmod util-linux strace \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kmod-operator
COPY --from=build /src/dist ./dist
COPY crds ./crds
# --max-semi-space-size=1 (MiB): V8's young generation otherwise grows to up
# to 16 MiB per semi-space on start-up and list garbage and keeps the pages;
# capped, the idle agent went from 97-106 to 84-94 MiB and a controller with
# 1,000 requests stored from 151 to 114 MiB (bench/RESULTS.md). bench/ and
# the tests read this line and run the same command.
ENTRYPOINT ["node", "--max-semi-space-size=1", "/opt/kmod-operator/dist/bin/kmod-operator.mjs"]
