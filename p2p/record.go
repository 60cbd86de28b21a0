package p2p

import (
	"bytes"
	"fmt"
	"math"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/record"
	ma "github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// RecordDomain is the signed-envelope domain of capability records: a
// signature made for another purpose never verifies as a capability record.
const RecordDomain = "edgellm-caps"

// maxIPFSAddrs caps the IPFS node addresses in a record (each is capped at
// maxAddrLen like the peer's own).
const maxIPFSAddrs = 16

// recordCodec is the envelope payload type of capability records.
var recordCodec = []byte("/edgellm/caps-record/1")

// Capabilities is what a peer advertises about itself; the CapabilitySource
// fills it, the advertiser adds identity, addresses, sequence and expiry.
type Capabilities struct {
	BackendVersion    string
	Device            string // "cpu" or the GPU name
	Engine            string // the backend's engine, "torch" or "vllm"; "" = torch
	MemoryTotalBytes  uint64
	MemoryFreeBytes   uint64
	Models            []Model
	PrefillTokensPerS float64
	DecodeTokensPerS  float64
	ActiveSessions    uint32
	MaxSessions       uint32
	PricePer1kMicros  uint64 // price per 1000 tokens in millionths of a credit
	Region            string
	RayAddress        string // host:port for a Ray head to reach this peer
	// IPFSPeerID is the peer id of the peer's IPFS node (Kubo); "" when it
	// runs none. IPFSAddrs are that node's swarm addresses, without /p2p (at
	// most 16, each at most 256 bytes encoded).
	IPFSPeerID peer.ID
	IPFSAddrs  []ma.Multiaddr
	// AcceptPulls: the peer answers PullProtocol (worker --accept-pulls),
	// storing at most PullDiskBudgetBytes so (0 = its free disk).
	AcceptPulls         bool
	PullDiskBudgetBytes uint64
}

// IPFSDialAddrs returns the addresses to connect an IPFS node to this
// peer's (Kubo's swarm/connect): each of IPFSAddrs with /p2p/<IPFSPeerID>
// appended. Nil when the peer advertises no IPFS node.
func (c *Capabilities) IPFSDialAddrs() []ma.Multiaddr {
	if c.IPFSPeerID == "" {
		return nil
	}
	suffix, err := ma.NewComponent("p2p", c.IPFSPeerID.String())
	if err != nil {
		return nil
	}
	out := make([]ma.Multiaddr, 0, len(c.IPFSAddrs))
	for _, a := range c.IPFSAddrs {
		out = append(out, a.Encapsulate(suffix))
	}
	return out
}

// LimitIPFSAddrs keeps the addresses a record can carry: at most 16, each
// at most 256 bytes encoded and without a /p2p part, in order.
func LimitIPFSAddrs(addrs []ma.Multiaddr) []ma.Multiaddr {
	var out []ma.Multiaddr
	for _, a := range addrs {
		if len(out) == maxIPFSAddrs {
			break
		}
		if len(a.Bytes()) == 0 || len(a.Bytes()) > maxAddrLen || hasP2P(a) {
			continue
		}
		out = append(out, a)
	}
	return out
}

func hasP2P(a ma.Multiaddr) bool {
	for _, c := range a {
		if c.Protocol().Code == ma.P_P2P {
			return true
		}
	}
	return false
}

// Model is one model a peer serves.
type Model struct {
	ID         string
	WeightsCID string
	// DirCID is the model's directory (weights, config, tokenizer, manifest)
	// in the peer's IPFS node, what `model pull` fetches; "" = not shared.
	DirCID       string
	NumLayers    uint32
	WeightsBytes uint64 // size of the whole model's weights; 0 = unknown
	LayerRanges  []LayerRange
	// Unloaded: the peer serves the model but loads it on demand first;
	// LoadTime is its last load there (0 = unknown).
	Unloaded bool
	LoadTime time.Duration
}

// LayerRange is the half-open range of layers [Start, End).
type LayerRange struct {
	Start, End uint32
}

// Record is a capability record: Capabilities plus the signer's identity,
// addresses, a sequence number and a validity window. It implements libp2p's
// record.Record so it travels in a signed envelope.
type Record struct {
	Capabilities
	PeerID    peer.ID
	Seq       uint64
	Issued    time.Time
	Expires   time.Time
	Withdrawn bool
	Addrs     []ma.Multiaddr
}

var _ record.Record = (*Record)(nil)

func init() { record.RegisterType(&Record{}) }

// Domain implements record.Record.
func (r *Record) Domain() string { return RecordDomain }

// Codec implements record.Record.
func (r *Record) Codec() []byte { return recordCodec }

// MarshalRecord implements record.Record.
func (r *Record) MarshalRecord() ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(r.toProto())
}

// UnmarshalRecord implements record.Record; it checks the size and the
// fields but not the signature (the envelope does that) nor the expiry.
func (r *Record) UnmarshalRecord(data []byte) error {
	if len(data) > MaxRecordSize {
		return fmt.Errorf("%w: %d bytes", ErrRecordTooLarge, len(data))
	}
	var m pb.CapabilityRecord
	if err := proto.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	rec, err := recordFromProto(&m)
	if err != nil {
		return err
	}
	*r = *rec
	return nil
}

// Serves reports whether the record lists a model with this id or weights CID.
func (r *Record) Serves(model string) bool {
	for _, m := range r.Models {
		if m.ID == model || (m.WeightsCID != "" && m.WeightsCID == model) {
			return true
		}
	}
	return false
}

// Live reports whether the record is neither withdrawn nor expired at now,
// nor issued more than MaxClockSkew after now.
func (r *Record) Live(now time.Time) bool {
	return !r.Withdrawn && now.Before(r.Expires) && !r.Issued.After(now.Add(MaxClockSkew))
}

func (r *Record) toProto() *pb.CapabilityRecord {
	m := &pb.CapabilityRecord{
		PeerId:                  []byte(r.PeerID),
		Seq:                     r.Seq,
		IssuedUnixMs:            r.Issued.UnixMilli(),
		ExpiresUnixMs:           r.Expires.UnixMilli(),
		Withdrawn:               r.Withdrawn,
		BackendVersion:          r.BackendVersion,
		Device:                  r.Device,
		Engine:                  r.Engine,
		MemoryTotalBytes:        r.MemoryTotalBytes,
		MemoryFreeBytes:         r.MemoryFreeBytes,
		PrefillTokensPerS:       r.PrefillTokensPerS,
		DecodeTokensPerS:        r.DecodeTokensPerS,
		ActiveSessions:          r.ActiveSessions,
		MaxSessions:             r.MaxSessions,
		PricePer_1KTokensMicros: r.PricePer1kMicros,
		Region:                  r.Region,
		RayAddress:              r.RayAddress,
		AcceptPulls:             r.AcceptPulls,
		PullDiskBudgetBytes:     r.PullDiskBudgetBytes,
	}
	for _, a := range r.Addrs {
		m.Addrs = append(m.Addrs, a.Bytes())
	}
	if r.IPFSPeerID != "" {
		m.IpfsPeerId = []byte(r.IPFSPeerID)
	}
	for _, a := range r.IPFSAddrs {
		m.IpfsAddrs = append(m.IpfsAddrs, a.Bytes())
	}
	for _, md := range r.Models {
		pm := &pb.ServedModel{
			Id: md.ID, WeightsCid: md.WeightsCID, NumLayers: md.NumLayers, WeightsBytes: md.WeightsBytes,
			Unloaded: md.Unloaded, LoadMs: uint32(min(md.LoadTime.Milliseconds(), math.MaxUint32)),
		}
		for _, lr := range md.LayerRanges {
			pm.LayerRanges = append(pm.LayerRanges, &pb.LayerRange{Start: lr.Start, End: lr.End})
		}
		pm.DirCid = md.DirCID
		m.Models = append(m.Models, pm)
	}
	return m
}

func recordFromProto(m *pb.CapabilityRecord) (*Record, error) {
	bad := func(format string, args ...any) (*Record, error) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidRecord, fmt.Sprintf(format, args...))
	}
	pid, err := peer.IDFromBytes(m.GetPeerId())
	if err != nil {
		return bad("peer id: %v", err)
	}
	if m.GetSeq() == 0 {
		return bad("sequence number 0")
	}
	if m.GetExpiresUnixMs() <= m.GetIssuedUnixMs() {
		return bad("expires before it is issued")
	}
	if m.GetExpiresUnixMs()-m.GetIssuedUnixMs() > maxRecordTTLSkew {
		return bad("validity longer than 24h")
	}
	if len(m.GetAddrs()) > maxAddrs || len(m.GetModels()) > maxModels {
		return bad("too many addresses or models")
	}
	for _, s := range []string{m.GetBackendVersion(), m.GetDevice(), m.GetEngine(), m.GetRegion(), m.GetRayAddress()} {
		if err := checkString(s); err != nil {
			return bad("%v", err)
		}
	}
	r := &Record{
		PeerID:    pid,
		Seq:       m.GetSeq(),
		Issued:    time.UnixMilli(m.GetIssuedUnixMs()),
		Expires:   time.UnixMilli(m.GetExpiresUnixMs()),
		Withdrawn: m.GetWithdrawn(),
		Capabilities: Capabilities{
			BackendVersion:      m.GetBackendVersion(),
			Device:              m.GetDevice(),
			Engine:              m.GetEngine(),
			MemoryTotalBytes:    m.GetMemoryTotalBytes(),
			MemoryFreeBytes:     m.GetMemoryFreeBytes(),
			PrefillTokensPerS:   m.GetPrefillTokensPerS(),
			DecodeTokensPerS:    m.GetDecodeTokensPerS(),
			ActiveSessions:      m.GetActiveSessions(),
			MaxSessions:         m.GetMaxSessions(),
			PricePer1kMicros:    m.GetPricePer_1KTokensMicros(),
			Region:              m.GetRegion(),
			RayAddress:          m.GetRayAddress(),
			AcceptPulls:         m.GetAcceptPulls(),
			PullDiskBudgetBytes: m.GetPullDiskBudgetBytes(),
		},
	}
	if !(r.PrefillTokensPerS >= 0 && r.DecodeTokensPerS >= 0) { // also refuses NaN
		return bad("negative or NaN speed")
	}
	for _, b := range m.GetAddrs() {
		if len(b) > maxAddrLen {
			return bad("address too long")
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return bad("address: %v", err)
		}
		r.Addrs = append(r.Addrs, a)
	}
	if err := r.ipfsFromProto(m); err != nil {
		return bad("ipfs: %v", err)
	}
	for _, pm := range m.GetModels() {
		md, err := modelFromProto(pm)
		if err != nil {
			return bad("model %q: %v", pm.GetId(), err)
		}
		r.Models = append(r.Models, md)
	}
	return r, nil
}

// ipfsFromProto checks and copies the IPFS node's peer id and addresses:
// a valid peer id or none, addresses only with one, at most 16 of at most
// 256 bytes, each a valid multiaddr without /p2p.
func (r *Record) ipfsFromProto(m *pb.CapabilityRecord) error {
	if len(m.GetIpfsPeerId()) == 0 {
		if len(m.GetIpfsAddrs()) > 0 {
			return fmt.Errorf("addresses without a peer id")
		}
		return nil
	}
	id, err := peer.IDFromBytes(m.GetIpfsPeerId())
	if err != nil {
		return fmt.Errorf("peer id: %v", err)
	}
	r.IPFSPeerID = id
	if len(m.GetIpfsAddrs()) > maxIPFSAddrs {
		return fmt.Errorf("more than %d addresses", maxIPFSAddrs)
	}
	for _, b := range m.GetIpfsAddrs() {
		if len(b) > maxAddrLen {
			return fmt.Errorf("address longer than %d bytes", maxAddrLen)
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return fmt.Errorf("address: %v", err)
		}
		if len(a) == 0 || hasP2P(a) {
			return fmt.Errorf("address %s: empty or with /p2p", a)
		}
		r.IPFSAddrs = append(r.IPFSAddrs, a)
	}
	return nil
}

func modelFromProto(pm *pb.ServedModel) (Model, error) {
	md := Model{
		ID: pm.GetId(), WeightsCID: pm.GetWeightsCid(), NumLayers: pm.GetNumLayers(),
		WeightsBytes: pm.GetWeightsBytes(),
		Unloaded:     pm.GetUnloaded(), LoadTime: time.Duration(pm.GetLoadMs()) * time.Millisecond,
	}
	if md.ID == "" {
		return md, fmt.Errorf("empty id")
	}
	if err := checkString(md.ID); err != nil {
		return md, err
	}
	if err := checkString(md.WeightsCID); err != nil {
		return md, err
	}
	md.DirCID = pm.GetDirCid()
	if err := checkString(md.DirCID); err != nil {
		return md, err
	}
	if md.NumLayers > maxLayers || len(pm.GetLayerRanges()) > maxLayerRanges {
		return md, fmt.Errorf("too many layers or layer ranges")
	}
	for _, lr := range pm.GetLayerRanges() {
		if lr.GetStart() >= lr.GetEnd() || lr.GetEnd() > md.NumLayers {
			return md, fmt.Errorf("layer range [%d,%d) outside [0,%d)", lr.GetStart(), lr.GetEnd(), md.NumLayers)
		}
		md.LayerRanges = append(md.LayerRanges, LayerRange{Start: lr.GetStart(), End: lr.GetEnd()})
	}
	return md, nil
}

func checkString(s string) error {
	if len(s) > maxStringLen {
		return fmt.Errorf("string longer than %d bytes", maxStringLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("string is not UTF-8")
	}
	return nil
}

// SealRecord signs rec with key and returns the envelope bytes. The record's
// PeerID must belong to key.
func SealRecord(rec *Record, key crypto.PrivKey) ([]byte, error) {
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return nil, err
	}
	if id != rec.PeerID {
		return nil, fmt.Errorf("%w: record of %s signed by %s", ErrInvalidRecord, rec.PeerID, id)
	}
	env, err := record.Seal(rec, key)
	if err != nil {
		return nil, fmt.Errorf("seal capability record: %w", err)
	}
	data, err := env.Marshal()
	if err != nil {
		return nil, fmt.Errorf("seal capability record: %w", err)
	}
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrRecordTooLarge, len(data), MaxRecordSize)
	}
	return data, nil
}

// OpenRecord verifies a signed envelope and returns its capability record. It
// checks the size, the signature, that the signer is the record's peer, and
// the fields; it does not check the expiry (see Record.Live, Validator).
func OpenRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes > %d", ErrRecordTooLarge, len(data), MaxRecordSize)
	}
	var rec Record
	env, err := record.ConsumeTypedEnvelope(data, &rec)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRecord, err)
	}
	if !bytes.Equal(env.PayloadType, recordCodec) {
		return nil, fmt.Errorf("%w: payload type %q", ErrInvalidRecord, env.PayloadType)
	}
	signer, err := peer.IDFromPublicKey(env.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: signer: %v", ErrInvalidRecord, err)
	}
	if signer != rec.PeerID {
		return nil, fmt.Errorf("%w: record of %s signed by %s", ErrInvalidRecord, rec.PeerID, signer)
	}
	return &rec, nil
}
