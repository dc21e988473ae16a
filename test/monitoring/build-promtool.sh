#!/usr/bin/env bash
# Builds Prometheus's promtool from the Go module proxy into
# .cache/promtool/<key>/promtool (gitignored), for `promtool check rules` and
# `promtool test rules` on the chart's PrometheusRule (test/monitoring.test.ts)
# and CI. <key> hashes this script and the version, so a changed recipe builds
# next to the old one instead of over it. Prints the binary's path. Only Go
# (>= 1.26) and the Go module proxy are needed.
#
#   bash test/monitoring/build-promtool.sh        # -> /path/to/repo/.cache/promtool/<key>/promtool
#   PROMETHEUS_VERSION=v0.315.1 bash test/monitoring/build-promtool.sh
set -euo pipefail

# Prometheus 3.x is published to the module proxy as v0.3XX.Y (v0.316.0 = 3.16.0).
PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
key="$( { cat "${BASH_SOURCE[0]}"; echo "$PROMETHEUS_VERSION"; } | sha256sum | cut -c1-16)"
out="$root/.cache/promtool/$key"
bin="$out/promtool"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi

if ! command -v go >/dev/null 2>&1; then
  echo "build-promtool.sh: Go is not installed; install Go >= 1.26 and retry" >&2
  exit 1
fi

echo "build-promtool.sh: building promtool $PROMETHEUS_VERSION into $bin (cold build: several minutes on 2 cores)" >&2
mkdir -p "$out"
mod="$(mktemp -d "${TMPDIR:-/tmp}/build-promtool.XXXXXX")"
trap 'rm -rf "$mod" "$bin.partial.$$"' EXIT
export GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
build() {
  cd "$mod"
  printf 'module local/build-promtool\n\ngo 1.26\n' >go.mod
  go get "github.com/prometheus/prometheus@$PROMETHEUS_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$bin.partial.$$" github.com/prometheus/prometheus/cmd/promtool
}
if ! (build); then
  echo "build-promtool.sh: building promtool $PROMETHEUS_VERSION failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
  exit 1
fi
# Renamed into place only when complete: a killed build leaves no half binary.
mv -f "$bin.partial.$$" "$bin"
echo "$bin"
