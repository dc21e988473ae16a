#!/usr/bin/env bash
# Builds the Helm CLI from the Go module proxy into .cache/helm/helm (gitignored),
# for the chart's lint/template test (test/chart.test.ts) and CI. Does nothing
# when .cache/helm/helm was built by this recipe (same script, same version):
# .cache/helm/helm.key records which. Prints the binary's path. No download
# site is needed: only Go (>= 1.26) and the Go module proxy.
#
#   bash charts/build-helm.sh              # -> /path/to/repo/.cache/helm/helm
#   HELM_VERSION=v3.21.4 bash charts/build-helm.sh
set -euo pipefail

# The newest Helm v3 the Go module proxy serves that builds with Go 1.26.
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="$root/.cache/helm"
helm="$out/helm"

key="$( { cat "${BASH_SOURCE[0]}"; echo "$HELM_VERSION"; } | sha256sum | cut -c1-16)"
if [ -x "$helm" ] && [ "$(cat "$helm.key" 2>/dev/null || true)" = "$key" ]; then
  echo "$helm"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-helm.sh: Go is not installed; install Go >= 1.26 (Debian: apt-get install golang, or from the Go toolchain) and retry" >&2
  exit 1
fi

echo "build-helm.sh: building helm $HELM_VERSION into $helm (cold build: a few minutes on 2 cores)" >&2
mkdir -p "$out"
# A throw-away main module outside the repository that requires Helm.
mod="$(mktemp -d "${TMPDIR:-/tmp}/build-helm.XXXXXX")"
trap 'rm -rf "$mod" "$helm.partial.$$"' EXIT
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
build() {
  cd "$mod"
  printf 'module local/build-helm\n\ngo 1.26\n' >go.mod
  go get "helm.sh/helm/v3@$HELM_VERSION"
  # As Helm's Makefile does: the default Kubernetes version of `helm template`
  # and `helm lint` (.Capabilities.KubeVersion, Chart.yaml kubeVersion checks)
  # follows the client-go it is built with (v0.35.x -> v1.35); without these
  # flags it would be v1.20.
  local kver kmajor kminor
  kver="$(go list -m -f '{{.Version}}' k8s.io/client-go)"
  kver="${kver#v}"
  kmajor="$((${kver%%.*} + 1))"
  kminor="${kver#*.}"
  kminor="${kminor%%.*}"
  local v=helm.sh/helm/v3 ldflags="-s -w"
  ldflags+=" -X $v/internal/version.version=$HELM_VERSION -X $v/internal/version.gitTreeState=clean"
  ldflags+=" -X $v/pkg/lint/rules.k8sVersionMajor=$kmajor -X $v/pkg/lint/rules.k8sVersionMinor=$kminor"
  ldflags+=" -X $v/pkg/chartutil.k8sVersionMajor=$kmajor -X $v/pkg/chartutil.k8sVersionMinor=$kminor"
  go build -trimpath -ldflags "$ldflags" -o "$helm.partial.$$" helm.sh/helm/v3/cmd/helm
}
if ! (build); then
  echo "build-helm.sh: building helm $HELM_VERSION failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY)) and that $(go version) satisfies Helm's go directive" >&2
  exit 1
fi
mv -f "$helm.partial.$$" "$helm"
echo "$key" >"$helm.key"
echo "$helm"
