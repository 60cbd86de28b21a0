package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/spf13/cobra"

	"github.com/edgellm/edgellm/internal/atomicfile"
	"github.com/edgellm/edgellm/internal/config"
	"github.com/edgellm/edgellm/p2p"
)

// joinFile holds the join string `swarm init` created, in the data directory;
// worker and peers use it when no --join is given.
const joinFile = "swarm.join"

const swarmLong = `A swarm is a private group of EdgeLLM nodes that trust each other enough to
form Ray clusters together. Its secret gates everything: a node without it can
neither connect to members, nor discover them, nor call their protocols.`

const swarmInitLong = `Create a new swarm: a fresh 32-byte swarm secret. Prints one join string on
stdout (and nothing else): share it with the machines that should join, e.g.
  edgellm worker --join STRING
It is also saved to <data-dir>/swarm.join (mode 0600), so worker and peers on
this machine join the swarm without --join. Anyone holding the string is a
member: treat it like a password.

--bootstrap adds the addresses of running members (/ip4/.../tcp/PORT/p2p/ID)
to the string; without them members find each other on the LAN (mDNS) or
through a member's own join string, which every worker prints when it starts.`

func newSwarmCommand(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "Create and manage private swarms",
		Long:  swarmLong,
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.AddCommand(newSwarmInitCommand(app))
	return cmd
}

func newSwarmInitCommand(app *App) *cobra.Command {
	var (
		bootstrap []string
		force     bool
	)
	cmd := &cobra.Command{
		Use:   "init [--bootstrap ADDR]...",
		Short: "Create a swarm secret and print its join string",
		Long:  swarmInitLong,
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := app.config(cmd)
			if err != nil {
				return err
			}
			bs, err := p2p.ParseBootstrapAddrs(bootstrap)
			if err != nil {
				return fmt.Errorf("%w: %w", ErrUsage, err)
			}
			path := filepath.Join(cfg.DataDir, joinFile)
			if _, err := os.Stat(path); err == nil && !force {
				return fmt.Errorf("%w: %s already holds a swarm; pass --force to replace it", ErrUsage, path)
			}
			secret, err := p2p.NewSecret()
			if err != nil {
				return err
			}
			join := p2p.Join{Secret: secret, Bootstrap: bs}.String()
			if err := writeSecretFile(path, join+"\n"); err != nil {
				return err
			}
			fmt.Fprintln(app.stdout, join)
			fmt.Fprintf(app.stderr, "Created swarm %s; saved to %s. Share the join string above only with machines you trust.\n",
				secret.ID(), path)
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&bootstrap, "bootstrap", nil, "address of a running member to include; repeat for several")
	cmd.Flags().BoolVar(&force, "force", false, "replace the swarm saved in the data directory")
	return cmd
}

// writeSecretFile writes a file readable by its owner only, atomically.
func writeSecretFile(path, content string) error {
	return atomicfile.Write(path, []byte(content), 0o600)
}

// swarmFlags are the membership flags of worker and peers.
type swarmFlags struct {
	join      string
	bootstrap []string
	noMDNS    bool
}

func (f *swarmFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.join, "join", "", "join string from `edgellm swarm init` (default: <data-dir>/swarm.join)")
	fl.StringArrayVar(&f.bootstrap, "bootstrap", nil, "extra bootstrap member address (/ip4/.../tcp/PORT/p2p/ID); repeat for several")
	fl.BoolVar(&f.noMDNS, "no-mdns", false, "do not look for members on the LAN with mDNS")
}

// resolve returns the swarm to join: --join, else the saved join string,
// plus --bootstrap. A malformed join string is a usage error (exit 2) whose
// message is one line.
func (f *swarmFlags) resolve(cfg *config.Config) (p2p.Join, error) {
	s, from := f.join, "--join"
	if s == "" {
		path := filepath.Join(cfg.DataDir, joinFile)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return p2p.Join{}, fmt.Errorf("%w: no swarm: pass --join STRING, or run `edgellm swarm init` first", ErrUsage)
		}
		if err != nil {
			return p2p.Join{}, fmt.Errorf("read %s: %w", path, err)
		}
		s, from = strings.TrimSpace(string(data)), path
	}
	j, err := p2p.ParseJoin(s)
	if err != nil {
		return p2p.Join{}, fmt.Errorf("%w: %s: %w", ErrUsage, from, err)
	}
	extra, err := p2p.ParseBootstrapAddrs(f.bootstrap)
	if err != nil {
		return p2p.Join{}, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	j.Bootstrap = mergeAddrInfos(append(j.Bootstrap, extra...))
	return j, nil
}

func mergeAddrInfos(in []peer.AddrInfo) []peer.AddrInfo {
	byID := map[peer.ID]int{}
	var out []peer.AddrInfo
	for _, ai := range in {
		if i, ok := byID[ai.ID]; ok {
			out[i].Addrs = append(out[i].Addrs, ai.Addrs...)
			continue
		}
		byID[ai.ID] = len(out)
		out = append(out, ai)
	}
	return out
}

// clientNode joins the swarm as a client with a throwaway identity;
// lookupTimeout bounds each lookup (0: p2p's default).
func (app *App) clientNode(join p2p.Join, listen []ma.Multiaddr, noMDNS bool, lookupTimeout time.Duration) (*p2p.Node, error) {
	key, err := p2p.NewEphemeralIdentity()
	if err != nil {
		return nil, err
	}
	node, err := p2p.New(
		p2p.WithIdentity(key), p2p.WithSecret(join.Secret), p2p.WithBootstrap(join.Bootstrap...),
		p2p.WithListenAddrs(listen...), p2p.WithMDNS(!noMDNS), p2p.WithLogger(app.log),
		p2p.WithLookupTimeout(lookupTimeout),
	)
	if err != nil {
		return nil, networkError(err)
	}
	return node, nil
}

// networkError marks configuration mistakes (QUIC in a private swarm, bad
// options) as usage errors.
func networkError(err error) error {
	if errors.Is(err, p2p.ErrInvalidConfig) || errors.Is(err, p2p.ErrQUICInPrivateSwarm) {
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return fmt.Errorf("network: %w", err)
}

// parseListen parses --listen multiaddrs; a bad one is a usage error.
func parseListen(ss []string) ([]ma.Multiaddr, error) {
	var out []ma.Multiaddr
	for _, s := range ss {
		a, err := ma.NewMultiaddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: --listen %q: %v", ErrUsage, s, err)
		}
		out = append(out, a)
	}
	return out, nil
}
