// Package ipfs runs and talks to the IPFS node (Kubo) every edgellm peer
// keeps beside its backend: the KV cache's blocks travel through it.
//
// Start supervises one `ipfs daemon` with its own repository (by default
// <data dir>/ipfs): it initialises the repository on first use, writes the
// settings edgellm depends on into its config on every start, waits until the
// HTTP RPC API answers, restarts the daemon with backoff when it dies, and
// stops it (SIGTERM, then SIGKILL) by its pid. Client is a small client of
// Kubo's HTTP RPC API (id, version, swarm connect, block put/get).
//
// Decisions, checked against Kubo v0.42.0 (tools/kubo pins it):
//
//   - Routing.Type is "none". The edgellm DHT does discovery, so Kubo needs no
//     public DHT and no delegated routers; bitswap asks the peers it is
//     connected to, so a block put on one node is fetched by a node that was
//     told to connect to it (Client.SwarmConnect with the addresses in the
//     other peer's capability record). Tested in daemon_test.go.
//   - A swarm member's Kubo runs a private network: the swarm secret is
//     written as swarm.key (/key/swarm/psk/1.0.0/, /base16/, hex) and the
//     daemon runs with LIBP2P_FORCE_PNET=1, so it refuses to start without
//     it. Only the swarm's Kubos can connect to each other (a Kubo with
//     another key or none fails the handshake; tested). Private networks are
//     TCP only: Kubo refuses QUIC, WebTransport and WebRTC with a swarm key
//     and cannot share the TCP listener with websockets, so all four are off.
//   - A peer with no swarm (a local infer) runs Kubo without swarm.key,
//     listening on 127.0.0.1 only, with no bootstrap peers: it is a local
//     block store nobody else reaches.
//   - Always off: bootstrap peers, AutoConf (it would fetch mainnet settings),
//     AutoTLS, mDNS, the relay client, providing to the DHT, and telemetry
//     (IPFS_TELEMETRY=off). The API and the gateway (off by default) listen on
//     unix sockets in the private repository (sockets.go; a configured port
//     puts them on 127.0.0.1 TCP instead), and the gateway sends no CORS
//     permission (Gateway.HTTPHeaders).
//   - A daemon killed with SIGKILL leaves repo.lock behind, but Kubo's lock is
//     an flock that dies with the process: the next start takes it (tested).
//     A stale api file, and stale sockets, are removed before each start.
//   - Ports: swarm port 0 picks a free port once. A restarted daemon keeps
//     the ports and sockets of the first start, so the backend's API address
//     and the capability record stay right.
//   - The daemon runs with --enable-gc: what the KV block store unpins is
//     garbage-collected once the repository nears Datastore.StorageMax
//     (Kubo's defaults; edit <repo>/config to change them, they are kept).
//   - A repository whose daemon is already running (another edgellm command
//     with the same data directory, e.g. infer beside a worker) is shared:
//     Start attaches to it, and Close leaves it running. Starts on one
//     repository take turns (an flock in it, startlock.go), so commands
//     started at once on a fresh data directory do not race on `ipfs init`:
//     the first starts the daemon, the others attach (tested).
package ipfs
