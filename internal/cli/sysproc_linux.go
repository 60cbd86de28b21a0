package cli

import "syscall"

// toolProcAttr asks Linux to kill the model tool when this process dies
// (even by SIGKILL): a killed `model pull` must not leave its Python tool
// fetching on. Pdeathsig follows the starting thread, which Go keeps for the
// process's life in practice (see internal/backend's sysProcAttr).
func toolProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
