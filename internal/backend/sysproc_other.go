//go:build unix && !linux

package backend

import "syscall"

// sysProcAttr puts the backend in its own process group; without Pdeathsig,
// the backend's --parent-pid watch ends it when the node dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
