//go:build tools

// Package tools pins the commands this module builds, so that `go mod tidy`
// keeps their dependencies: the control plane (kube-apiserver,
// kube-controller-manager), the real node of the end-to-end suite (kubelet,
// kube-scheduler), and a kubectl of the cluster's own version for the tests
// that run the README's commands as written.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
