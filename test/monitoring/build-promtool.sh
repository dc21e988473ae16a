#!/usr/bin/env bash
# Builds Prometheus's promtool from the Go module proxy into
# .cache/promtool/<key>/promtool (gitignored), for `promtool check rules` and
# `promtool test rules` on the chart's PrometheusRule (test/monitoring.test.ts)
# and CI. <key> hashes the build scripts and the version, so a changed recipe
# builds next to the old one instead of over it. Prints the binary's path.
# Only Go (>= 1.26) and the Go module proxy are needed (scripts/go-tool.sh).
#
#   bash test/monitoring/build-promtool.sh        # -> /path/to/repo/.cache/promtool/<key>/promtool
#   PROMETHEUS_VERSION=v0.315.1 bash test/monitoring/build-promtool.sh
set -euo pipefail

# Prometheus 3.x is published to the module proxy as v0.3XX.Y (v0.316.0 = 3.16.0).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
GO_TOOL_NAME=build-promtool.sh
source "$root/scripts/go-tool.sh"
key="$(go_tool_key "${BASH_SOURCE[0]}" "$GO_TOOL_LIB" -- "$PROMETHEUS_VERSION")"
bin="$root/.cache/promtool/$key/promtool"
go_tool_cached "$bin" "$key"

# In a throw-away main module that requires Prometheus.
build() {
  cd "$GO_TOOL_MOD"
  export GOFLAGS="-mod=mod -buildvcs=false"
  printf 'module local/build-promtool\n\ngo 1.26\n' >go.mod
  go get "github.com/prometheus/prometheus@$PROMETHEUS_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$GO_TOOL_OUT" github.com/prometheus/prometheus/cmd/promtool
}
go_tool_build "$bin" "promtool $PROMETHEUS_VERSION" build
