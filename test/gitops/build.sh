#!/usr/bin/env bash
# Builds gitops-health (this folder's main.go: kstatus's Compute and an Argo CD
# health Lua script under gopher-lua) from the Go module proxy into
# .cache/gitops/<key>/gitops-health (gitignored). <key> hashes this folder's
# go.mod, go.sum, main.go and the build scripts, so a changed recipe builds
# beside the old one. Prints the binary's path. Only Go (>= 1.26) and the
# module proxy are needed (scripts/go-tool.sh).
#
#   bash test/gitops/build.sh     # -> /path/to/repo/.cache/gitops/<key>/gitops-health
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
GO_TOOL_NAME=test/gitops/build.sh
source "$root/scripts/go-tool.sh"
key="$(go_tool_key "${BASH_SOURCE[0]}" "$GO_TOOL_LIB" "$here/go.mod" "$here/go.sum" "$here/main.go")"
bin="$root/.cache/gitops/$key/gitops-health"
go_tool_cached "$bin" "$key"

build() {
  cd "$here"
  # -mod=readonly: the versions are the ones go.sum pins, nothing resolved anew.
  GOFLAGS="-mod=readonly -buildvcs=false" go build -trimpath -ldflags "-s -w" -o "$GO_TOOL_OUT" .
}
go_tool_build "$bin" gitops-health build
