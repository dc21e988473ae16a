# The operator image (controller and agent). Node 24 runs the TypeScript
# sources directly (type stripping), so there is no build step.
# BASE: the public image users build on; the end-to-end suite (make e2e)
# passes a base made locally with the same layout (Debian bookworm, Node 24
# and npm in /usr/local), since no registry is reachable there.
ARG BASE=node:24-bookworm-slim
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends kmod util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kmod-operator
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm cache clean --force && rm -rf /root/.npm
COPY src ./src
COPY crds ./crds
ENTRYPOINT ["node", "/opt/kmod-operator/src/cli/main.ts"]
