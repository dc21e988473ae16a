#!/usr/bin/env bash
# Builds the local control plane (etcd, kube-apiserver, kube-controller-manager),
# the real node's kubelet and kube-scheduler, and a kubectl of the same version,
# from the Go module proxy into .cache/cluster/<key>/bin, where <key> hashes the
# pinned versions (go.mod/go.sum of both modules, this script and the Go version).
# A second run with the same pins does nothing. Prints the bin directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if ! command -v go >/dev/null 2>&1; then
  echo "build.sh: Go is not installed; install Go >= 1.26 (Debian: apt-get install golang, or from the Go toolchain) and retry" >&2
  exit 1
fi

# Kubernetes v1.36.x: the values /version and kubectl report.
K8S_VERSION="v1.36.3"
K8S_COMMIT="0000000000000000000000000000000000000000"

key="$( { cat "$here"/kube/go.mod "$here"/kube/go.sum "$here"/etcd/go.mod "$here"/etcd/go.sum "$here"/build.sh; go version; } | sha256sum | cut -c1-16)"
out="$root/.cache/cluster/$key"
bin="$out/bin"

KUBE_CMDS="kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl"
have=1
for cmd in etcd $KUBE_CMDS; do [ -x "$bin/$cmd" ] || have=0; done
if [ "$have" = 1 ]; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin.partial"
echo "build.sh: building the control plane $K8S_VERSION into $bin (cold build: about 7 min on 2 cores; warm Go caches: about 1 min)" >&2

pkg=k8s.io/component-base/version
cgo=k8s.io/client-go/pkg/version
ver="${K8S_VERSION#v}"
major="${ver%%.*}"; rest="${ver#*.}"; minor="${rest%%.*}"
date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
ldflags="-s -w"
for p in "$pkg" "$cgo"; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=$major -X $p.gitMinor=$minor"
  ldflags+=" -X $p.gitCommit=$K8S_COMMIT -X $p.gitTreeState=clean -X $p.buildDate=$date"
done

export CGO_ENABLED=0 GOFLAGS=-buildvcs=false
if ! ( cd "$here/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin.partial/etcd" . ); then
  echo "build.sh: building etcd failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
  exit 1
fi
for cmd in $KUBE_CMDS; do
  if ! ( cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd" ); then
    echo "build.sh: building $cmd failed; check that the Go module proxy is reachable (GOPROXY=$(go env GOPROXY))" >&2
    exit 1
  fi
done

rm -rf "$bin"
mv "$bin.partial" "$bin"
# Keep only the current build: old keys are pins nobody uses any more.
find "$root/.cache/cluster" -mindepth 1 -maxdepth 1 -type d ! -name "$key" -exec rm -rf {} +
echo "$bin"
