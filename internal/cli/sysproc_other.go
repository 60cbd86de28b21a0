//go:build !linux

package cli

import "syscall"

// toolProcAttr: without Pdeathsig, a killed `model pull` leaves its tool to
// finish or fail on its own.
func toolProcAttr() *syscall.SysProcAttr { return nil }
