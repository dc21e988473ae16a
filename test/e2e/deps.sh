#!/usr/bin/env bash
# Debian packages the end-to-end suite needs (installed by `make e2e-deps`):
# a container runtime for the real node (containerd + runc), the CNI
# loopback plugin, debootstrap for the locally made base image, and buildah
# (a daemonless builder) to build the project's own Dockerfile on it; and for
# the real-kernel VM node (test/e2e/vm-image.sh, support/vm.ts): QEMU
# (qemu-system-x86, qemu-img from qemu-utils), busybox-static and cpio for its
# initramfs, e2fsprogs (mkfs.ext4 -d) for its disk, and gcc, make and libelf1
# (objtool) to build an out-of-tree module against Debian's linux-headers.
set -euo pipefail
need=()
have() { PATH="$PATH:/sbin:/usr/sbin" command -v "$1" >/dev/null 2>&1; }
have containerd || need+=(containerd)
have runc || need+=(runc)
[ -x /usr/lib/cni/loopback ] || need+=(containernetworking-plugins)
have debootstrap || need+=(debootstrap)
have buildah || need+=(buildah)
have iptables || need+=(iptables)
have qemu-system-x86_64 || need+=(qemu-system-x86)
have qemu-img || need+=(qemu-utils)
# Debian's dynamically linked busybox would not run in the initramfs.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
have cpio || need+=(cpio)
have mkfs.ext4 || need+=(e2fsprogs)
have gcc-12 || need+=(gcc-12)
have make || need+=(make)
have depmod || need+=(kmod)
dpkg -s libelf1 >/dev/null 2>&1 || need+=(libelf1)
if [ "${#need[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}" >&2
  if [ "$(id -u)" != 0 ]; then echo "need root (or: sudo apt-get install ${need[*]})" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's containerd package starts a system containerd; the suite runs its own
# (own root, state and socket). Leave the system one alone if it was there before.
