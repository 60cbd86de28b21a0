// Package p2p is EdgeLLM's network: one libp2p host per node, private swarm
// membership, discovery (a private Kademlia DHT plus mDNS), signed
// capability records and cluster negotiation.
//
// # Host
//
// NewHost builds a go-libp2p host with a persistent Ed25519 identity
// (LoadOrCreateIdentity), TCP listeners (and QUIC for open hosts; see the
// gate below), Noise as the only security protocol, yamux, the resource
// manager with libp2p's auto-scaled default limits plus a small budget for
// the caps service, a connection manager, the ping service, and NAT
// traversal: the AutoNAT service, the circuit-relay v2 client and DCUtR hole
// punching. UPnP port mapping is off by default.
//
// # The membership gate
//
// A swarm is private: members form Ray clusters together, and Ray lets any
// member run code on any other. The gate is a libp2p private network
// (pnet): every TCP connection starts with a handshake keyed by the swarm's
// 32-byte pre-shared key, before multistream, Noise or any protocol. A node
// without the key cannot complete a connection, so it cannot discover
// members (the DHT runs over these connections and mDNS announces a service
// name derived from the key by a one-way hash), read their records or call
// any of their protocols.
//
// go-libp2p implements pnet for stream transports only; its QUIC (and
// WebTransport, WebRTC) transports refuse a pre-shared key, because QUIC's
// handshake is TLS inside UDP datagrams and has no place for it. A private
// swarm therefore runs on TCP only: NewHost refuses a QUIC listen address
// with ErrQUICInPrivateSwarm instead of silently opening an ungated door.
// The price is QUIC's faster handshake and its better hole-punching success
// rate; DCUtR still punches holes over TCP (simultaneous open) and relays
// still work. An open host (tests, future open swarms) gets QUIC as well.
//
// # Discovery
//
// The DHT speaks /edgellm/kad/1.0.0 (ProtocolPrefix "/edgellm") and is given
// only the swarm's bootstrap peers: never the public IPFS list. Workers run
// it in server mode, clients in client mode. mDNS (service
// "_edgellm-<swarm id>._udp") connects members on the same LAN without any
// bootstrap peer.
//
// # Capability records
//
// A worker's Record (proto edgellm.v1.CapabilityRecord) travels in a libp2p
// signed envelope (domain "edgellm-caps") signed by the worker's identity
// key, at most MaxRecordSize bytes. It carries a sequence number (Unix
// milliseconds at signing, strictly increasing) and an expiry. Every
// RefreshInterval (default 1 min) the worker re-signs it with the expiry
// RecordTTL ahead (default 3 min), puts it in the DHT under
// /edgellm-caps/<peer id> (Validator: signature, signer = key = record peer,
// not expired; newest sequence wins), provides MembersKey and each model's
// keys (ModelKey, ModelIDKey), and serves it on /edgellm/caps/1.0.0 for a
// direct, fresh read. Leave publishes a signed withdrawal with a higher
// sequence number and stops providing; a crashed worker drops out of
// Lookup once its record expires.
//
// # Cluster negotiation
//
// /edgellm/cluster/1.0.0 forms a session's Ray cluster (docs/architecture.md,
// request path steps 3, 6 and 7). The requester's ClusterClient.JoinSession opens
// one stream per chosen worker and sends a JoinRequest: a 16-byte random
// session id, the model id and weights CID, the layer range [start, end),
// the host:port of its Ray head, a fresh 32-byte Ray token (NewRayToken;
// it travels only over this Noise-encrypted stream and prints redacted), a
// deadline and a heartbeat interval. The worker's ClusterService accepts
// only a model id and weights CID it advertises (the same CapabilitySource
// as its record), a layer range within one advertised range, a deadline
// ahead but at most MaxJoinWait away, a heartbeat interval within its
// bounds, a session id not in use, and only while under its session limit;
// then its SessionHandler (the CLI's adapter to the backend's Ray join)
// joins, and it answers JoinAccepted with its Ray address and its resource
// name "peer:<peer id>". Anything else gets JoinRefused with a RefuseReason
// and a text, which the requester sees as a *RefusedError.
//
// The stream stays open for the session: the requester sends a heartbeat
// every interval and the worker acknowledges each. A worker that hears
// nothing for HeartbeatMisses intervals, or sees the stream die, calls the
// handler's Leave and frees the slot; a requester that gets no
// acknowledgement in as long sees SessionHandle.Lost fire, so its failover
// can re-plan. SessionHandle.Leave ends a session cleanly: the worker leaves
// Ray, frees the slot, then acknowledges. Closing the service tells every
// requester ("left") and leaves every session.
//
// Every message is length-delimited protobuf of at most
// MaxClusterMessageSize (4 KiB) bytes, every read and write has a deadline,
// streams run under the resource-manager service "edgellm.cluster" with
// their memory reserved, a malformed or oversized join is refused as
// MALFORMED, and any later garbage resets the stream and ends the session.
// The protocol has no authentication of its own: only swarm members can
// open a stream (the gate above), and a swarm is one trust domain.
package p2p
