# The operator image (controller and agent). It runs one bundled, minified
# JavaScript file built from the TypeScript sources by scripts/bundle.ts
# (esbuild): a standalone agent idles at ~86 MiB from it against ~165 MiB
# from the sources (bench/RESULTS.md says where the difference goes), and the
# image needs no node_modules.
# BASE: the public image users build on, pinned by its digest (the
# multi-platform index of node:24-bookworm-slim, Node 24.18.0), so a rebuild
# gets the same base until someone moves the pin on purpose. To move it:
#   docker buildx imagetools inspect node:24-bookworm-slim   (or: crane digest node:24-bookworm-slim)
# and put the new "Digest:" here (Dependabot's and Renovate's docker managers
# do the same in a pull request). The end-to-end suite (make e2e) passes a
# base made locally with the same layout (Debian bookworm, Node 24 and npm in
# /usr/local), since no registry is reachable there.
ARG BASE=node:24-bookworm-slim@sha256:6f7b03f7c2c8e2e784dcf9295400527b9b1270fd37b7e9a7285cf83b6951452d

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
# kmod (modprobe) and util-linux (setpriv; dmesg, the kernel's reason for a refused
# load) for the helper; strace for the errno of the module system call the kernel
# refused (modprobe -q prints nothing; the agent's --tracer); tini as PID 1 (see
# ENTRYPOINT). Then no package manager is left for anyone who gets a shell in
# the privileged agent's container: npm, npx, corepack and yarn go (the
# runtime needs only node and the bundle).
RUN apt-get update \
 && apt-get install -y --no-install-recommends kmod util-linux strace tini \
 && rm -rf /var/lib/apt/lists/* \
 && rm -rf /usr/local/lib/node_modules /opt/yarn-* \
      /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack /usr/local/bin/yarn /usr/local/bin/yarnpkg
WORKDIR /opt/kmod-operator
COPY --from=build /src/dist ./dist
COPY crds ./crds
# Not root by default: the controller needs no privilege at all (deploy/ and the
# chart run it as 65532, non-root). The agent needs root for CAP_SYS_MODULE and
# CAP_SETPCAP, and its pod says so itself (runAsUser: 0, only those two
# capabilities added, everything else dropped).
USER 65532:65532
# tini is PID 1: it forwards SIGTERM to node (the agent drains on it) and reaps
# every orphan re-parented to it. An `install` command in a node's modprobe.d
# may background a process that outlives modprobe; it ends up a child of PID 1,
# and node reaps only the children it spawned itself, so without an init each
# one stayed a zombie for the container's life (test/hardening.test.ts, make e2e).
# --max-semi-space-size=1 (MiB): V8's young generation otherwise grows to up
# to 16 MiB per semi-space on start-up and list garbage and keeps the pages;
# capped, the idle agent went from 97-106 to 84-94 MiB and a controller with
# 1,000 requests stored from 151 to 114 MiB (bench/RESULTS.md). bench/ and
# the tests read this line and run the same command.
ENTRYPOINT ["/usr/bin/tini", "--", "node", "--max-semi-space-size=1", "/opt/kmod-operator/dist/bin/kmod-operator.mjs"]
