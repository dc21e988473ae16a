#!/usr/bin/env bash
# `make e2e`: builds the images (in this machine's network namespace: the build
# needs the Debian mirror and the npm registry), then runs the end-to-end
# suite inside a NEW network namespace of its own. There the control plane,
# containerd, the kubelet and the pods have the network to themselves:
#   10.250.0.1/32  the node, on this namespace's lo (this kernel has no dummy
#                  interfaces; the kubelet refuses 127.0.0.0/8 as a node IP but
#                  not another address on lo): the kubelet's InternalIP and
#                  the API server's address, which pods reach;
#   10.251.0.0/24  the pod network (a CNI bridge, created by containerd);
#   10.250.1.0/24  the link to the real-kernel VM node (test/e2e/vm.test.ts):
#                  a TAP device the suite creates, 10.250.1.1 on this side,
#                  10.250.1.2 the guest;
#   10.252.0.0/24  the VM node's pod network (a CNI bridge inside the guest),
#                  routed through the guest.
# Nothing of it is visible outside, no packet leaves it, and when the suite
# exits the namespace and every interface and route in it are gone.
# Arguments: test files (default: test/e2e/*.test.ts).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "${KMOD_E2E_IN_NETNS:-}" != 1 ]; then
  bash test/e2e/image.sh >/dev/null
  bash test/e2e/vm-image.sh >/dev/null
  exec unshare --net -- env KMOD_E2E_IN_NETNS=1 bash "$0" "$@"
fi
ip link set lo up
ip addr add 10.250.0.1/32 dev lo
export KMOD_E2E_NODE_IP=10.250.0.1 KMOD_E2E_POD_SUBNET=10.251.0.0/24
export KMOD_E2E_VM_LINK=10.250.1.1/24 KMOD_E2E_VM_IP=10.250.1.2/24 KMOD_E2E_VM_POD_SUBNET=10.252.0.0/24
[ $# -gt 0 ] || set -- test/e2e/*.test.ts
# The suite's counts and time go into the results file too (scripts/test-reporter.ts).
export TEST_RESULTS="${E2E_RESULTS:-test/e2e/results.json}"
exec node_modules/.bin/node --test --test-concurrency=1 --test-reporter=./scripts/test-reporter.ts --test-timeout=900000 "$@"
