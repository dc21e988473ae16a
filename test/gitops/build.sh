#!/usr/bin/env bash
# Builds gitops-health (this folder's main.go: kstatus's Compute and an Argo CD
# health Lua script under gopher-lua) from the Go module proxy into
# .cache/gitops/<key>/gitops-health (gitignored). <key> hashes this folder's
# go.mod, go.sum, main.go and this script, so a changed recipe builds beside the
# old one. Prints the binary's path. Only Go (>= 1.26) and the module proxy are needed.
#
#   bash test/gitops/build.sh     # -> /path/to/repo/.cache/gitops/<key>/gitops-health
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
key="$(cat "${BASH_SOURCE[0]}" "$here/go.mod" "$here/go.sum" "$here/main.go" | sha256sum | cut -c1-16)"
out="$root/.cache/gitops/$key"
bin="$out/gitops-health"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "test/gitops/build.sh: Go is not installed; install Go >= 1.26 and retry" >&2
  exit 1
fi
echo "test/gitops/build.sh: building gitops-health into $bin" >&2
mkdir -p "$out"
trap 'rm -f "$bin.partial.$$"' EXIT
cd "$here"
# -mod=readonly: the versions are the ones go.sum pins, nothing resolved anew.
if ! GOWORK=off GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false" \
  go build -trimpath -ldflags "-s -w" -o "$bin.partial.$$" .; then
  echo "test/gitops/build.sh: build failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
  exit 1
fi
mv -f "$bin.partial.$$" "$bin"
echo "$bin"
