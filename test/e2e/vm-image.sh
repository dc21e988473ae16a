#!/usr/bin/env bash
# Builds the end-to-end suite's real-kernel VM node (booted by
# test/e2e/support/vm.ts), without mounting anything on this machine:
#   1. Debian's cloud kernel, version pinned below, from the Debian mirror
#      (apt-get download + dpkg-deb -x): vmlinuz and its modules (depmod);
#   2. an unsigned out-of-tree module (test/e2e/vm/kmod_e2e_unsigned.c),
#      compiled with gcc and kbuild against linux-headers of the same
#      version, installed under /lib/modules/<release>/extra;
#   3. an initramfs (busybox-static and the virtio modules the root disk
#      needs: Debian's cloud kernel builds them as modules), made with cpio;
#   4. the root file system: the debootstrap base test/e2e/image.sh already
#      made, plus Debian's containerd, runc, CNI plugins, kmod, iproute2 and
#      tini (buildah run, as the image build does), the project's kubelet
#      (.cache/cluster), the kernel's modules and the guest scripts of
#      test/e2e/vm/; written into an ext4 disk image by `mkfs.ext4 -d`.
# Everything goes to .cache/e2e/vm/<key>/, where the key hashes the kernel
# version, the base, the kubelet, the guest files and this script; a second
# run with the same inputs does nothing. The project and pause images are not
# in the disk: the suite attaches their docker-archives to the VM as read-only
# disks and imports them at the first boot (they change with every source
# change; the disk does not).
# Prints "name value" lines: kernel, initrd, disk, release, version, unsigned.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cache="$root/.cache/e2e/vm"
mkdir -p "$cache"
log() { echo "e2e vm image: $*" >&2; }
hash() { sha256sum | cut -c1-16; }

# --- The kernel: pinned ------------------------------------------------------
# Debian bookworm's cloud kernel (ABI package and its exact version). Debian
# replaces a kernel on the mirror when a newer one (a point or security
# release) comes out, so a pin here will eventually be gone from the mirror. Then
# this script takes, deliberately and loudly, the version the mirror's
# linux-image-cloud-amd64 depends on now, rather than failing CI for a mirror
# change: the scenarios rely on modules every 6.1 build has (dummy, brd, loop,
# xfs/libcrc32c, vxlan, ifb), not on this exact build. The version used is in
# the cache key and in the suite's results (test/e2e/results.json); bump the
# pin to it when you see the warning.
KERNEL_ABI=6.1.0-57-cloud-amd64
KERNEL_VERSION=6.1.192-3
# Bump VM_RECIPE when the steps below change in a way the key does not see.
VM_RECIPE=1
GUEST_PACKAGES="containerd runc containernetworking-plugins kmod iproute2 tini procps"

available() { apt-cache show "$1=$2" >/dev/null 2>&1; }
if ! available "linux-image-$KERNEL_ABI" "$KERNEL_VERSION"; then
  # A fresh machine may have no package lists yet.
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
fi
if ! available "linux-image-$KERNEL_ABI" "$KERNEL_VERSION"; then
  abi_pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*-cloud-amd64\)$/\1/p' | head -1)"
  [ -n "$abi_pkg" ] || {
    echo "e2e vm image: Debian's mirror has neither linux-image-$KERNEL_ABI $KERNEL_VERSION (pinned in $0) nor a linux-image-cloud-amd64 to follow; check apt's sources (apt-cache policy linux-image-cloud-amd64)" >&2
    exit 1
  }
  new_abi="${abi_pkg#linux-image-}"
  new_version="$(apt-cache policy "$abi_pkg" | sed -n 's/^ *Candidate: //p')"
  log "WARNING: the pinned kernel linux-image-$KERNEL_ABI $KERNEL_VERSION is gone from Debian's mirror;"
  log "WARNING: using $abi_pkg $new_version instead. Set KERNEL_ABI=$new_abi and KERNEL_VERSION=$new_version in $0."
  KERNEL_ABI="$new_abi"
  KERNEL_VERSION="$new_version"
fi
# linux-headers-6.1.0-57-cloud-amd64 -> linux-headers-6.1.0-57-common, linux-kbuild-6.1
abi_common="${KERNEL_ABI%-cloud-amd64}-common"
kbuild_series="$(echo "$KERNEL_ABI" | cut -d. -f1-2)"

# --- Inputs of the key --------------------------------------------------------
# The debootstrap base image.sh made (its 4th line; cached there, so this is quick).
base_line="$(bash test/e2e/image.sh | sed -n 4p)"
base_tar="${base_line%% *}"
base_name="${base_line#* }"
kubelet="$(bash test/cluster/build.sh)/kubelet"
key="$( {
  echo "$VM_RECIPE $KERNEL_ABI $KERNEL_VERSION $base_name $GUEST_PACKAGES"
  sha256sum "$kubelet" /bin/busybox | cut -d' ' -f1
  cat "$0" test/e2e/vm/*
  gcc --version | head -1
} | hash)"
out="$cache/$key"

if [ ! -s "$out/done" ]; then
  start=$(date +%s)
  work="$(mktemp -d "$cache/work.XXXXXX")"
  store="$root/.cache/e2e/buildah"
  ba() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }
  ctr=""
  trap 'status=$?; [ -z "$ctr" ] || ba rm "$ctr" >/dev/null 2>&1 || true; rm -rf "$work"; exit $status' EXIT

  # 1. The kernel, its headers and kbuild (the headers only build step 2's module).
  debs="$cache/debs-$KERNEL_ABI-$KERNEL_VERSION"
  if [ ! -d "$debs" ]; then
    log "apt-get download linux-image-$KERNEL_ABI $KERNEL_VERSION (and its headers)"
    mkdir -p "$work/debs"
    # Run as root: apt's sandbox user could not write into the cache.
    (cd "$work/debs" && apt-get -o APT::Sandbox::User=root download -qq \
      "linux-image-$KERNEL_ABI=$KERNEL_VERSION" "linux-headers-$KERNEL_ABI=$KERNEL_VERSION" \
      "linux-headers-$abi_common=$KERNEL_VERSION" "linux-kbuild-$kbuild_series=$KERNEL_VERSION" >&2)
    rm -rf "$cache"/debs-*
    mv "$work/debs" "$debs"
  fi
  mkdir -p "$work/kernel" "$work/headers"
  dpkg-deb -x "$debs"/linux-image-*.deb "$work/kernel"
  for d in "$debs"/linux-headers-*.deb "$debs"/linux-kbuild-*.deb; do dpkg-deb -x "$d" "$work/headers"; done
  release="$(ls "$work/kernel/lib/modules")"
  [ "$release" = "$KERNEL_ABI" ] || { echo "e2e vm image: the package holds modules for $release, expected $KERNEL_ABI" >&2; exit 1; }

  # 2. The unsigned module. The headers' Makefile includes the common headers by
  # their absolute path under /usr/src: point it at the extracted copy.
  hdr="$work/headers/usr/src/linux-headers-$KERNEL_ABI"
  sed -i "s#^include /usr/src/#include $work/headers/usr/src/#" "$hdr/Makefile"
  mkdir -p "$work/unsigned"
  cp test/e2e/vm/kmod_e2e_unsigned.c test/e2e/vm/Kbuild "$work/unsigned/"
  make -s -C "$hdr" M="$work/unsigned" modules >"$work/unsigned.log" 2>&1 \
    || { cat "$work/unsigned.log" >&2; exit 1; }
  if modinfo -F sig_id "$work/unsigned/kmod_e2e_unsigned.ko" | grep -q .; then
    echo "e2e vm image: kmod_e2e_unsigned.ko came out signed; it must not be" >&2
    exit 1
  fi
  modules="$work/kernel/lib/modules/$release"
  install -D -m 0644 "$work/unsigned/kmod_e2e_unsigned.ko" "$modules/extra/kmod_e2e_unsigned.ko"
  depmod -b "$work/kernel" "$release"

  # 3. The initramfs: busybox and the root disk's modules, in dependency order.
  ird="$work/initramfs"
  mkdir -p "$ird/bin" "$ird/lib/modules" "$ird/proc" "$ird/sys" "$ird/dev" "$ird/newroot"
  install -m 0755 /bin/busybox "$ird/bin/busybox"
  install -m 0755 test/e2e/vm/initramfs-init "$ird/init"
  for m in virtio_pci virtio_blk; do
    modprobe --show-depends -d "$work/kernel" -S "$release" "$m" | awk '$1 == "insmod" {print $2}'
  done | awk '!seen[$0]++' | while read -r ko; do
    cp "$ko" "$ird/lib/modules/"
    basename "$ko" >>"$ird/lib/modules/order"
  done
  (cd "$ird" && find . | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$work/initrd.img"

  # 4. The root file system, from the base image.sh made.
  log "root file system: $base_name + $GUEST_PACKAGES"
  ba inspect --type image "$base_name" >/dev/null 2>&1 || ba pull -q "docker-archive:$base_tar" >/dev/null
  ctr="$(ba from --pull-never "$base_name")"
  ba run --isolation chroot "$ctr" -- sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $GUEST_PACKAGES >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*" >&2
  # The vfs driver's "mount" is the container's directory itself: nothing is mounted.
  rootfs="$(ba mount "$ctr")"
  # The guest runs Node only inside the operator's container: drop the base's copy.
  rm -rf "$rootfs/usr/local/bin/node" "$rootfs/usr/local/bin/npm" "$rootfs/usr/local/bin/npx" "$rootfs/usr/local/lib/node_modules"
  mkdir -p "$rootfs/usr/lib/modules"
  cp -a "$modules" "$rootfs/usr/lib/modules/"
  install -m 0755 "$kubelet" "$rootfs/usr/local/bin/kubelet"
  for f in boot ctl node reboot; do install -m 0755 "test/e2e/vm/$f" "$rootfs/usr/local/sbin/kmod-e2e-$f"; done
  printf '127.0.0.1 localhost\n' >"$rootfs/etc/hosts"
  # The kubelet reports it as the Node's machineID (a fresh one per image build).
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$rootfs/etc/machine-id"
  # No DNS in the suite's network; the kubelet copies this file into pods.
  printf '# kmod-operator e2e: no DNS\n' >"$rootfs/etc/resolv.conf"
  mkdir -p "$rootfs/etc/kmod-e2e" "$rootfs/etc/modprobe.d" "$rootfs/var/lib/kubelet" "$rootfs/var/log/kmod-e2e"
  # 4 GiB, sparse: ~0.5 GiB of files, the project image imported at first boot (content and unpacked).
  truncate -s 4G "$work/disk.img"
  mkfs.ext4 -q -F -L kmod-e2e-root -d "$rootfs" "$work/disk.img"
  ba rm "$ctr" >/dev/null
  ctr=""

  mkdir -p "$work/out"
  cp "$work/kernel/boot/vmlinuz-$release" "$work/out/vmlinuz"
  mv "$work/initrd.img" "$work/disk.img" "$work/out/"
  printf 'release %s\nversion %s\n' "$release" "$KERNEL_VERSION" >"$work/out/info"
  rm -rf "$out"
  mv "$work/out" "$out"
  date +%s >"$out/done"
  # Earlier keys' images: 4 GiB sparse each.
  find "$cache" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9a-f]\{16\}' ! -name "$key" -exec rm -rf {} +
  log "built in $(($(date +%s) - start)) s ($out)"
  # The README's e2e figures come from this file (test/support/results.ts; E2E_RESULTS=path elsewhere).
  "$root/node_modules/.bin/node" "$root/test/support/results.ts" record "${E2E_RESULTS:-$root/test/e2e/results.json}" \
    vmImageBuild seconds=$(($(date +%s) - start)) kernel="linux-image-$KERNEL_ABI $KERNEL_VERSION" \
    includes="kernel and headers unpacked, the unsigned module built, initramfs, root file system (buildah run apt-get) and mkfs.ext4 -d; package downloads cached apart" >&2
  rm -rf "$work"
  trap - EXIT
fi

echo "kernel $out/vmlinuz"
echo "initrd $out/initrd.img"
echo "disk $out/disk.img"
cat "$out/info"
echo "unsigned kmod_e2e_unsigned"
