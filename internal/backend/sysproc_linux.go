package backend

import "syscall"

// sysProcAttr puts the backend in its own process group, so a Ctrl-C on the
// terminal reaches only the node (which then aborts and stops the backend in
// order), and asks Linux to send SIGTERM to the backend when the node dies.
//
// Pdeathsig fires when the thread that started the child exits; Go keeps its
// threads for the life of the process unless a goroutine exits while locked
// to one, so this is the process's death in practice. The backend also
// watches --parent-pid, which covers the remaining cases and other systems.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
