package testutil

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"
)

// connectScript connects to HOST:PORT N times and prints the fastest
// connect in ms (one round trip each), or "unreachable" after a timeout.
const connectScript = `
import socket, sys, time
best = None
for _ in range(int(sys.argv[3])):
    t = time.monotonic()
    try:
        socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2).close()
    except OSError:
        print("unreachable"); sys.exit(0)
    best = min(best or 1e9, (time.monotonic() - t) * 1000)
print(best)
`

// TestHosts: the hosts reach each other at their own addresses; a delayable
// host's round trips take the delay set, both ways; a pulled cable
// stops traffic and plugging it back restores it.
func TestHosts(t *testing.T) {
	hosts := NewHosts(t, 2, 1)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	server := hosts[1].Command(ctx, "python3", "-c",
		"import socket\ns=socket.create_server(('"+hosts[1].Addr+"', 9000))\nwhile True: s.accept()[0].close()")
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Process.Kill(); server.Wait() })
	connect := func(n int) string {
		t.Helper()
		out, err := hosts[0].Command(ctx, "python3", "-c", connectScript, hosts[1].Addr, "9000", strconv.Itoa(n)).Output()
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	rttMs := func() float64 {
		t.Helper()
		var got string
		for range 50 { // the server may still be starting
			if got = connect(3); got != "unreachable" {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		ms, err := strconv.ParseFloat(got, 64)
		if err != nil {
			t.Fatalf("connect printed %q", got)
		}
		return ms
	}
	if ms := rttMs(); ms >= 40 {
		t.Errorf("round trip %.1f ms with no delay set", ms)
	}
	if err := hosts[1].SetDelay(40 * time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ms := rttMs(); ms < 80 {
		t.Errorf("round trip %.1f ms with 40 ms each way; want at least 80", ms)
	}
	if err := hosts[0].SetDelay(time.Millisecond); err == nil {
		t.Error("SetDelay on a host with a plain veth cable succeeded")
	}
	if err := hosts[1].SetLink(false); err != nil {
		t.Fatal(err)
	}
	if got := connect(1); got != "unreachable" {
		t.Errorf("connect over a pulled cable: %s", got)
	}
	if err := hosts[1].SetLink(true); err != nil {
		t.Fatal(err)
	}
	rttMs()
}
