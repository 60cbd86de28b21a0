package testutil

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NetNSEnv is set, to the namespace's name, in a test binary that
// RunTestInNetNS re-executes inside a namespace.
const NetNSEnv = "EDGELLM_TEST_NETNS"

// NetNS is a network namespace created by a test for multicast (mDNS) tests:
// its only interface is its own loopback, up, with multicast on and a route
// for 224.0.0.0/4, so nothing sent in it reaches the machine's interfaces.
type NetNS struct {
	Name string
	ip   string // absolute path of ip(8)
}

// NewNetNS creates a fresh namespace, edgellm-test-<random>, and registers a
// cleanup that deletes it. Create it before starting the processes that run
// in it, so that their cleanups (which stop them) run first. The test is
// skipped when no namespace can be created here (not Linux, not root, no
// ip(8), or the kernel refuses); it never falls back to the host's network.
func NewNetNS(t testing.TB) *NetNS {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("skipping: needs a network namespace (Linux only)")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root to create a network namespace (ip netns add)")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("skipping: needs ip(8) from iproute2 to create a network namespace")
	}
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	ns := &NetNS{Name: "edgellm-test-" + hex.EncodeToString(b[:]), ip: ip}
	if out, err := ns.ipCmd("netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Skipf("skipping: cannot create a network namespace: ip netns add: %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := ns.ipCmd("netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", ns.Name, err, bytes.TrimSpace(out))
		}
	})
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "set", "lo", "multicast", "on"},
		{"route", "add", "224.0.0.0/4", "dev", "lo"},
	} {
		if out, err := ns.ipCmd(append([]string{"-n", ns.Name}, args...)...).CombinedOutput(); err != nil {
			t.Fatalf("ip -n %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
		}
	}
	// A fresh namespace has nothing but lo; make sure of it.
	out, err := ns.ipCmd("-n", ns.Name, "-o", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip -n %s link show: %v", ns.Name, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if f := strings.Fields(line); len(f) < 2 || f[1] != "lo:" || !strings.Contains(line, "MULTICAST") {
			t.Fatalf("namespace %s: unexpected interface: %s", ns.Name, line)
		}
	}
	return ns
}

func (ns *NetNS) ipCmd(args ...string) *exec.Cmd {
	return exec.Command(ns.ip, args...)
}

// Command returns `ip netns exec NAME name args...`. ip execs the command in
// place, so the started process's pid is the command's own.
func (ns *NetNS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, ns.ip, append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// Prefix is the argv prefix that runs a command in the namespace.
func (ns *NetNS) Prefix() []string {
	return []string{ns.ip, "netns", "exec", ns.Name}
}

// RunTestInNetNS re-executes this test binary inside ns, running only the
// top-level test named test with NetNSEnv set, and waits for it (at most
// timeout). It fails t with the child's output when the child fails, and
// skips t when the child skipped.
func RunTestInNetNS(t testing.TB, ns *NetNS, test string, timeout time.Duration) {
	t.Helper()
	self, err := os.Executable() // not /proc/self/exe: ip would resolve that to itself
	if err != nil {
		t.Fatal(err)
	}
	// The child's own -test.timeout fires first and prints its goroutines.
	ctx, cancel := context.WithTimeout(context.Background(), timeout+15*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, self, "-test.run", "^"+test+"$", "-test.count=1", "-test.v",
		"-test.timeout", timeout.String())
	cmd.Env = append(os.Environ(), NetNSEnv+"="+ns.Name)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	switch {
	case err != nil:
		t.Fatalf("%s in namespace %s: %v\n%s", test, ns.Name, err, out)
	case bytes.Contains(out, []byte("--- SKIP: "+test+" ")):
		t.Skipf("%s skipped in namespace %s:\n%s", test, ns.Name, out)
	case !bytes.Contains(out, []byte("--- PASS: "+test+" ")):
		t.Fatalf("%s in namespace %s did not pass:\n%s", test, ns.Name, out)
	}
	t.Logf("%s passed in namespace %s", test, ns.Name)
}

// InNetNS reports whether this process is a test re-executed by
// RunTestInNetNS. If it is, it fails t unless the process really is inside
// that namespace and sees loopback interfaces only, so that a stray
// environment variable can never send multicast to the host's network.
func InNetNS(t testing.TB) bool {
	t.Helper()
	name := os.Getenv(NetNSEnv)
	if name == "" {
		return false
	}
	if err := checkInNetNS(name); err != nil {
		t.Fatalf("%s=%s: %v", NetNSEnv, name, err)
	}
	return true
}

func checkInNetNS(name string) error {
	var want, got syscall.Stat_t
	if err := syscall.Stat(filepath.Join("/run/netns", name), &want); err != nil {
		return err
	}
	if err := syscall.Stat("/proc/self/ns/net", &got); err != nil {
		return err
	}
	if want.Dev != got.Dev || want.Ino != got.Ino {
		return fmt.Errorf("this process is not in network namespace %s", name)
	}
	ifaces, err := net.Interfaces()
	if err != nil {
		return err
	}
	for _, ifi := range ifaces {
		if ifi.Flags&net.FlagLoopback == 0 {
			return fmt.Errorf("non-loopback interface %s in the namespace", ifi.Name)
		}
	}
	return nil
}
