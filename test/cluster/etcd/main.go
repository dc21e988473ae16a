// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3 for
// the local test control plane (the upstream etcd main is a thin wrapper
// around etcdmain too).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
