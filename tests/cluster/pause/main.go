// The sandbox ("pause") process of the test nodes' pods: holds the pod's namespaces, reaps
// orphaned children, exits on SIGINT/SIGTERM. Built by tests/cluster/images; no outside
// registry is reachable from the test machines, so the nodes cannot pull the upstream one.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every exited child: as a pod's PID 1 (shared PID namespace) nobody else does.
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
