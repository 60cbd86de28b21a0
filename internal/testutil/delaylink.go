package testutil

import (
	"fmt"
	"os"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// delayLink is a host's cable with a settable one-way delay, for kernels
// without the netem qdisc (tc qdisc ... netem: "Specified qdisc kind is
// unknown", CONFIG_NET_SCH_NETEM off): two TAP devices, one in the host's
// namespace (its eth0) and one on the switch's bridge, and this process
// copying Ethernet frames between them, each held for the delay first. The
// frames are the kernel's own; only the wire is emulated.
type delayLink struct {
	host, sw *os.File     // the TAP devices' queues
	delay    atomic.Int64 // one way, in nanoseconds
}

// frame is one Ethernet frame and when it may leave.
type frame struct {
	at time.Time
	b  []byte
}

// openTap creates TAP device name in this process's namespace and returns
// its queue (closing it deletes the device). The ioctl comes before the
// queue is made non-blocking and handed to Go's poller, so that Close ends a
// pending Read.
func openTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	var req struct {
		name  [unix.IFNAMSIZ]byte
		flags uint16
		_     [22]byte
	}
	copy(req.name[:], name)
	req.flags = unix.IFF_TAP | unix.IFF_NO_PI
	if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.TUNSETIFF, uintptr(unsafe.Pointer(&req))); errno != 0 {
		unix.Close(fd)
		return nil, fmt.Errorf("TUNSETIFF %s: %w", name, errno)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// start copies frames both ways until close.
func (l *delayLink) start() {
	go l.pump(l.host, l.sw)
	go l.pump(l.sw, l.host)
}

func (l *delayLink) pump(src, dst *os.File) {
	queue := make(chan frame, 4096)
	go func() {
		for fr := range queue {
			time.Sleep(time.Until(fr.at))
			_, _ = dst.Write(fr.b) // a frame lost on a closing link is lost
		}
	}()
	defer close(queue)
	buf := make([]byte, 65536)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		fr := frame{at: time.Now().Add(time.Duration(l.delay.Load())), b: append([]byte(nil), buf[:n]...)}
		select {
		case queue <- fr:
		default: // a full queue drops, as a real one does
		}
	}
}

func (l *delayLink) close() {
	l.host.Close()
	l.sw.Close()
}
