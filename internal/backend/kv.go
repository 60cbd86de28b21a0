package backend

import (
	"context"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// KV-cache block keys (docs/architecture.md, "KV blocks over IPFS"): the
// KVControl calls behind the Backend interface's PrefixKeys, HeldKeys and
// BlockManifest.

// PrefixKeys implements Backend.
func (b *grpcBackend) PrefixKeys(ctx context.Context, req *pb.PrefixKeysRequest) (*pb.PrefixKeysResponse, error) {
	return b.kv.PrefixKeys(ctx, req)
}

// HeldKeys implements Backend.
func (b *grpcBackend) HeldKeys(ctx context.Context, afterSeq uint64, limit uint32) (*pb.HeldKeysResponse, error) {
	return b.kv.HeldKeys(ctx, &pb.HeldKeysRequest{AfterSeq: afterSeq, Limit: limit})
}

// BlockManifest implements Backend.
func (b *grpcBackend) BlockManifest(ctx context.Context, req *pb.BlockManifestRequest) (*pb.BlockManifestResponse, error) {
	return b.kv.BlockManifest(ctx, req)
}

// PrefixKeys implements Backend.
func (s *Supervisor) PrefixKeys(ctx context.Context, req *pb.PrefixKeysRequest) (*pb.PrefixKeysResponse, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.PrefixKeys(ctx, req)
	return resp, s.explain(ctx, p, "prefix keys", err)
}

// HeldKeys implements Backend.
func (s *Supervisor) HeldKeys(ctx context.Context, afterSeq uint64, limit uint32) (*pb.HeldKeysResponse, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.HeldKeys(ctx, afterSeq, limit)
	return resp, s.explain(ctx, p, "held keys", err)
}

// BlockManifest implements Backend.
func (s *Supervisor) BlockManifest(ctx context.Context, req *pb.BlockManifestRequest) (*pb.BlockManifestResponse, error) {
	p, err := s.current(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := p.client.BlockManifest(ctx, req)
	return resp, s.explain(ctx, p, "block manifest", err)
}
