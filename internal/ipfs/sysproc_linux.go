package ipfs

import "syscall"

// sysProcAttr puts the daemon in its own process group, so a Ctrl-C on the
// terminal reaches only the node (which then stops the daemon in order), and
// has Linux kill the daemon when the node dies: Kubo's repository survives a
// SIGKILL (its lock is an flock, its datastores are crash-safe), and a
// daemon outliving its node would keep the repository locked.
//
// Pdeathsig fires when the thread that started the child exits; Go keeps its
// threads for the life of the process unless a goroutine exits while locked
// to one, so this is the process's death in practice.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
