package ipfs_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgellm/edgellm/internal/ipfs"
	"github.com/edgellm/edgellm/internal/testutil"
)

// These tests run real Kubo daemons, each with a temporary repository and
// free loopback ports, and stop exactly the processes they started.

func newKey(t *testing.T) []byte {
	key := make([]byte, ipfs.SwarmKeyLen)
	rand.Read(key)
	return key
}

// loopback is where test daemons' swarms listen, with or without a key.
var loopback = []net.IP{net.IPv4(127, 0, 0, 1)}

// start starts a daemon on repo (a fresh temp dir when "") and closes it at
// the end of the test.
func start(t *testing.T, repo string, key []byte, onRestart ...func()) *ipfs.Daemon {
	t.Helper()
	if repo == "" {
		repo = filepath.Join(t.TempDir(), "ipfs")
	}
	var log bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	opts := ipfs.Options{
		Binary: testutil.IPFSBinary(t), RepoDir: repo, SwarmKey: key, SwarmIPs: loopback,
		Log: &log, StopTimeout: 5 * time.Second,
	}
	for _, f := range onRestart {
		opts.OnRestart = f
	}
	d, err := ipfs.Start(ctx, opts)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return d
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestDaemonStartStop: a daemon starts on a fresh repository, answers id and
// version on 127.0.0.1, and Close ends its process.
func TestDaemonStartStop(t *testing.T) {
	testutil.NoLeakedChildren(t)
	bin := testutil.IPFSBinary(t)
	repo := filepath.Join(t.TempDir(), "ipfs")
	began := time.Now()
	d, err := ipfs.Start(context.Background(), ipfs.Options{Binary: bin, RepoDir: repo})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first start (init + daemon) took %v", time.Since(began))
	pid := d.Pid()
	// The API is a unix socket in the private repository, not a TCP port
	// every local user can reach.
	if pid <= 0 || d.Attached() || d.APIURL() != "unix:"+filepath.Join(repo, "api.sock") {
		t.Fatalf("pid %d, attached %v, api %s", pid, d.Attached(), d.APIURL())
	}
	if fi, err := os.Stat(repo); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("repository %v (%v), want mode 0700", fi.Mode(), err)
	}
	if d.GatewayURL() != "" {
		t.Fatalf("gateway %s with Options.Gateway off", d.GatewayURL())
	}
	if pids := testutil.ProcessesMentioning(repo); len(pids) != 1 || pids[0] != pid {
		t.Fatalf("processes mentioning the repository: %v, want [%d]", pids, pid)
	}
	ctx := ctxT(t, 30*time.Second)
	id, err := d.Client().ID(ctx)
	if err != nil || id.ID == "" {
		t.Fatalf("id: %+v, %v", id, err)
	}
	for _, a := range id.Addrs {
		if !strings.HasPrefix(a.String(), "/ip4/127.0.0.1/tcp/") {
			t.Errorf("a node without a swarm listens off loopback: %s", a)
		}
	}
	v, err := d.Client().Version(ctx)
	if err != nil || v == "" {
		t.Fatalf("version %q, %v", v, err)
	}
	if _, err := os.Stat(filepath.Join(repo, "swarm.key")); !os.IsNotExist(err) {
		t.Fatalf("swarm.key without a swarm: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	testutil.WaitExit(t, pid, 5*time.Second)
	if _, err := d.Client().ID(ctx); err == nil {
		t.Fatal("API still answers after Close")
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	// Warm start on the same repository.
	began = time.Now()
	d2 := start(t, repo, nil)
	t.Logf("warm start took %v", time.Since(began))
	id2, err := d2.Client().ID(ctx)
	if err != nil || id2.ID != id.ID {
		t.Fatalf("identity changed across restarts: %s → %s (%v)", id.ID, id2.ID, err)
	}
}

// TestDaemonRestartAfterKill: a daemon killed with SIGKILL is restarted on
// the same API port with the same identity; its stale repo.lock and api file
// do not wedge the restart.
func TestDaemonRestartAfterKill(t *testing.T) {
	testutil.NoLeakedChildren(t)
	repo := filepath.Join(t.TempDir(), "ipfs")
	var restarts atomic.Int32
	d := start(t, repo, newKey(t), func() { restarts.Add(1) })
	ctx := ctxT(t, time.Minute)
	id, err := d.Client().ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pid := d.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitExit(t, pid, 5*time.Second)
	if _, err := os.Stat(filepath.Join(repo, "repo.lock")); err != nil {
		t.Logf("no repo.lock left behind: %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if p := d.Pid(); p != 0 && p != pid {
			if id2, err := d.Client().ID(ctx); err == nil {
				if id2.ID != id.ID {
					t.Fatalf("identity changed: %s → %s", id.ID, id2.ID)
				}
				if !sameAddrs(id.Addrs, id2.Addrs) {
					t.Fatalf("swarm addresses changed: %v → %v", id.Addrs, id2.Addrs)
				}
				if n := restarts.Load(); n != 1 {
					t.Errorf("the restart hook ran %d times, want 1", n)
				}
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not restarted (err %v)", d.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGateway: with Options.Gateway the daemon serves raw blocks on
// 127.0.0.1 (trustless responses only), and a restart after SIGKILL keeps
// the gateway's URL, which the backend was given.
func TestGateway(t *testing.T) {
	testutil.NoLeakedChildren(t)
	repo := filepath.Join(t.TempDir(), "ipfs")
	d, err := ipfs.Start(ctxT(t, 2*time.Minute), ipfs.Options{
		Binary: testutil.IPFSBinary(t), RepoDir: repo, SwarmKey: newKey(t), SwarmIPs: loopback,
		Gateway: true, StopTimeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	gw := d.GatewayURL()
	if gw != "unix:"+filepath.Join(repo, "gateway.sock") {
		t.Fatalf("gateway %q, want a socket in the repository", gw)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", strings.TrimPrefix(gw, "unix:"))
	}}}
	ctx := ctxT(t, time.Minute)
	data := []byte("a KV block, as far as the gateway knows")
	cid, err := d.Client().BlockPut(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	get := func(accept string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://kubo/ipfs/"+cid, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		req.Header.Set("Origin", "https://any.example")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		// No web page may read blocks: CORS allows no origin.
		if acao := resp.Header.Get("Access-Control-Allow-Origin"); acao != "" {
			t.Fatalf("Access-Control-Allow-Origin %q", acao)
		}
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	tests := []struct {
		name   string
		accept string
		ok     bool
	}{
		{"raw block", "application/vnd.ipld.raw", true},
		{"deserialized (a website) is refused", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := get(tt.accept)
			if ok := status == http.StatusOK; ok != tt.ok {
				t.Fatalf("status %d (%q)", status, body)
			}
			if tt.ok && !bytes.Equal(body, data) {
				t.Fatalf("body %q, want %q", body, data)
			}
		})
	}
	pid := d.Pid()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.WaitExit(t, pid, 5*time.Second)
	deadline := time.Now().Add(time.Minute)
	for d.Pid() == 0 || d.Pid() == pid {
		if time.Now().After(deadline) {
			t.Fatalf("not restarted (err %v)", d.Err())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d.GatewayURL() != gw {
		t.Fatalf("gateway moved across a restart: %s → %s", gw, d.GatewayURL())
	}
	if status, body := get("application/vnd.ipld.raw"); status != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("after restart: status %d, body %q", status, body)
	}
}

func sameAddrs[T interface{ String() string }](a, b []T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].String() != b[i].String() {
			return false
		}
	}
	return true
}

// TestDaemonStaleLock: after SIGKILL with restarts off, a new Start on the
// same repository works although repo.lock and api are still there.
func TestDaemonStaleLock(t *testing.T) {
	testutil.NoLeakedChildren(t)
	bin := testutil.IPFSBinary(t)
	repo := filepath.Join(t.TempDir(), "ipfs")
	d, err := ipfs.Start(context.Background(), ipfs.Options{Binary: bin, RepoDir: repo, MaxRestartsPerMinute: -1})
	if err != nil {
		t.Fatal(err)
	}
	pid := d.Pid()
	syscall.Kill(pid, syscall.SIGKILL)
	testutil.WaitExit(t, pid, 5*time.Second)
	for d.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
	if !errors.Is(d.Err(), ipfs.ErrGaveUp) {
		t.Fatalf("Err = %v, want ErrGaveUp", d.Err())
	}
	d.Close()
	for _, f := range []string{"repo.lock", "api"} {
		if _, err := os.Stat(filepath.Join(repo, f)); err != nil {
			t.Logf("%s not left behind by SIGKILL: %v", f, err)
		}
	}
	d2 := start(t, repo, nil)
	if _, err := d2.Client().ID(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestDaemonAttach: a second Start on a repository whose daemon runs uses
// that daemon, and its Close leaves it running.
func TestDaemonAttach(t *testing.T) {
	testutil.NoLeakedChildren(t)
	repo := filepath.Join(t.TempDir(), "ipfs")
	d := start(t, repo, nil)
	d2, err := ipfs.Start(context.Background(), ipfs.Options{Binary: testutil.IPFSBinary(t), RepoDir: repo})
	if err != nil {
		t.Fatal(err)
	}
	if !d2.Attached() || d2.APIURL() != d.APIURL() || d2.Pid() != 0 {
		t.Fatalf("attached %v, api %s vs %s", d2.Attached(), d2.APIURL(), d.APIURL())
	}
	d2.Close()
	if _, err := d.Client().ID(ctxT(t, 10*time.Second)); err != nil {
		t.Fatalf("closing the attached handle stopped the daemon: %v", err)
	}
	// A swarm member cannot share a daemon outside its private network, and
	// leaves the running daemon's repository alone.
	_, err = ipfs.Start(context.Background(), ipfs.Options{Binary: testutil.IPFSBinary(t), RepoDir: repo, SwarmKey: newKey(t)})
	if !errors.Is(err, ipfs.ErrStartFailed) || !strings.Contains(err.Error(), "outside this swarm") {
		t.Fatalf("member on a local node's repository: %v", err)
	}
	if _, err := os.Stat(filepath.Join(repo, "swarm.key")); !os.IsNotExist(err) {
		t.Fatalf("swarm.key written into a running daemon's repository: %v", err)
	}
}

// TestPrivateSwarm: daemons with the same swarm key connect and bitswap
// moves a block between them with Routing.Type none; a daemon with another
// key or none cannot connect.
func TestPrivateSwarm(t *testing.T) {
	testutil.NoLeakedChildren(t)
	key := newKey(t)
	a := start(t, "", key)
	b := start(t, "", key)
	ctx := ctxT(t, time.Minute)
	idA, err := a.Client().ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Client().ConnectPeer(ctx, idA.ID, idA.Addrs); err != nil {
		t.Fatalf("member connect: %v", err)
	}
	data := []byte("kv block " + time.Now().String())
	cid, err := a.Client().BlockPut(ctx, data)
	if err != nil || !strings.HasPrefix(cid, "bafkrei") {
		t.Fatalf("block put: %q, %v", cid, err)
	}
	getCtx, cancel := context.WithTimeout(ctx, 20*time.Second)
	got, err := b.Client().BlockGet(getCtx, cid)
	cancel()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("block get over bitswap: %q, %v", got, err)
	}

	outsiders := []struct {
		name string
		key  []byte
	}{
		{"another swarm key", newKey(t)},
		{"no swarm key", nil},
	}
	for _, o := range outsiders {
		t.Run(o.name, func(t *testing.T) {
			c := start(t, "", o.key)
			cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := c.Client().SwarmConnect(cctx, idA.DialAddrs()...); err == nil {
				t.Fatal("an outsider connected to a private swarm member")
			}
			peers, err := a.Client().SwarmPeers(cctx)
			if err != nil {
				t.Fatal(err)
			}
			idC, _ := c.Client().ID(cctx)
			for _, p := range peers {
				if p == idC.ID {
					t.Fatal("the member lists the outsider as connected")
				}
			}
			gctx, gcancel := context.WithTimeout(cctx, 2*time.Second)
			defer gcancel()
			if _, err := c.Client().BlockGet(gctx, cid); err == nil {
				t.Fatal("an outsider fetched a member's block")
			}
		})
	}
}

// TestStartFailure: a binary that is not Kubo fails with a StartError.
func TestStartFailure(t *testing.T) {
	_, err := ipfs.Start(context.Background(), ipfs.Options{Binary: "/bin/false", RepoDir: t.TempDir()})
	var se *ipfs.StartError
	if !errors.As(err, &se) || !errors.Is(err, ipfs.ErrStartFailed) {
		t.Fatalf("err = %v", err)
	}
}

// TestConcurrentStartsShareOneDaemon: commands started at once on a fresh
// repository (two `edgellm infer` in one data dir) do not race on `ipfs init`
// or on the repository: one starts the daemon, the others attach to it.
func TestConcurrentStartsShareOneDaemon(t *testing.T) {
	testutil.NoLeakedChildren(t)
	repo := filepath.Join(t.TempDir(), "ipfs")
	const n = 3
	daemons := make([]*ipfs.Daemon, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			daemons[i], errs[i] = ipfs.Start(ctxT(t, 2*time.Minute), ipfs.Options{
				Binary: testutil.IPFSBinary(t), RepoDir: repo, SwarmIPs: loopback, StopTimeout: 5 * time.Second,
			})
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, d := range daemons {
			if d != nil {
				d.Close() // a no-op on the attached ones
			}
		}
	})
	var owner *ipfs.Daemon
	for i, d := range daemons {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if !d.Attached() {
			if owner != nil {
				t.Fatalf("two daemons started on one repository")
			}
			owner = d
		}
	}
	if owner == nil {
		t.Fatal("no start spawned the daemon")
	}
	for i, d := range daemons {
		if d.APIURL() != owner.APIURL() {
			t.Errorf("start %d: API %s, the daemon's is %s", i, d.APIURL(), owner.APIURL())
		}
		if _, err := d.Client().ID(ctxT(t, 10*time.Second)); err != nil {
			t.Errorf("start %d: id: %v", i, err)
		}
	}
}
