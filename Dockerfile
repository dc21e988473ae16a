# The operator image (controller and agent). Not built in CI here: this
# workplace has no container engine. Node 24 runs the TypeScript sources
# directly (type stripping), so there is no build step.
FROM node:24-bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends kmod util-linux \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/kmod-operator
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY src ./src
COPY crds ./crds
ENTRYPOINT ["node", "/opt/kmod-operator/src/cli/main.ts"]
