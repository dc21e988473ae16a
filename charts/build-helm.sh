#!/usr/bin/env bash
# Builds the Helm CLI from the Go module proxy into .cache/helm/helm (gitignored),
# for the chart's lint/template test (test/chart.test.ts) and CI. Does nothing
# when .cache/helm/helm was built by this recipe (same scripts, same version):
# .cache/helm/helm.key records which. Prints the binary's path. No download
# site is needed: only Go (>= 1.26) and the Go module proxy (scripts/go-tool.sh).
#
#   bash charts/build-helm.sh              # -> /path/to/repo/.cache/helm/helm
#   HELM_VERSION=v3.21.4 bash charts/build-helm.sh
set -euo pipefail

# The newest Helm v3 the Go module proxy serves that builds with Go 1.26.
HELM_VERSION="${HELM_VERSION:-v3.22.0}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
GO_TOOL_NAME=build-helm.sh
source "$root/scripts/go-tool.sh"
helm="$root/.cache/helm/helm"
key="$(go_tool_key "${BASH_SOURCE[0]}" "$GO_TOOL_LIB" -- "$HELM_VERSION")"
go_tool_cached "$helm" "$key" "$helm.key"

# In a throw-away main module that requires Helm.
build() {
  cd "$GO_TOOL_MOD"
  export GOFLAGS="-mod=mod -buildvcs=false"
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
  go build -trimpath -ldflags "$ldflags" -o "$GO_TOOL_OUT" helm.sh/helm/v3/cmd/helm
}
go_tool_build "$helm" "helm $HELM_VERSION" build "$helm.key" "$key" \
  "and that $(go version 2>/dev/null) satisfies Helm's go directive"
