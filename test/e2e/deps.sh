#!/usr/bin/env bash
# Debian packages the end-to-end suite needs (installed by `make e2e-deps`):
# a container runtime for the real node (containerd + runc), the CNI
# loopback plugin, debootstrap for the locally made base image, and buildah
# (a daemonless builder) to build the project's own Dockerfile on it.
set -euo pipefail
need=()
have() { PATH="$PATH:/sbin:/usr/sbin" command -v "$1" >/dev/null 2>&1; }
have containerd || need+=(containerd)
have runc || need+=(runc)
[ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
have debootstrap || need+=(debootstrap)
have buildah || need+=(buildah)
have iptables || need+=(iptables)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  if [ "$(id -u)" != 0 ]; then echo "need root (or: sudo apt-get install ${need[*]})" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's containerd package starts a system containerd; the suite runs its own
# (own root, state and socket). Leave the system one alone if it was there before.
