//go:build unix && !linux

package ipfs

import "syscall"

// sysProcAttr puts the daemon in its own process group. Without Pdeathsig a
// daemon whose node was killed keeps running; the next start on the same
// repository attaches to it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
