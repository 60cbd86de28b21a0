package p2p

import "time"

// Size and count limits for everything another peer or a user can send us.
// Each decoder checks the byte size before parsing and the counts after.
const (
	// MaxRecordSize caps a signed capability envelope (bytes), on the wire
	// and in the DHT.
	MaxRecordSize = 16 << 10
	// MaxRequestSize caps a CapabilityRequest (bytes).
	MaxRequestSize = 256
	// MaxJoinStringLen caps a join string (characters).
	MaxJoinStringLen = 8 << 10

	maxAddrs         = 32  // listen addresses in a record
	maxModels        = 64  // models in a record
	maxLayerRanges   = 16  // layer ranges per model
	maxStringLen     = 256 // any string field in a record
	maxAddrLen       = 256 // one binary multiaddr
	maxBootstrap     = 32  // bootstrap addresses in a join string
	maxLayers        = 1 << 16
	maxRecordTTLSkew = 24 * 60 * 60 * 1000 // a record may claim at most 24h of life (ms)
)

// MaxClockSkew is how far in the future a record's issue time may lie (the
// signer's clock ahead of ours). A record issued later is refused: with its
// expiry pushed along, it would stay valid long after its peer stopped
// renewing it (hardening: lying capability records).
const MaxClockSkew = 2 * time.Minute
