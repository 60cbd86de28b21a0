package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
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
	"github.com/edgellm/edgellm/internal/volunteer"
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
  edgellm worker --join-file FILE   (or EDGELLM_JOIN=STRING, or --join - on stdin)
It is also saved to <data-dir>/swarm.join (mode 0600), so worker and peers on
this machine join the swarm without --join. Anyone holding the string is a
member: treat it like a password.

--bootstrap adds the addresses of running members (/ip4/.../tcp/PORT/p2p/ID)
to the string; without them members find each other on the LAN (mDNS) or
through a running worker's join string (edgellm swarm join-string).`

const swarmJoinStringLong = `Print this machine's join string on stdout: the running worker's (from
<data-dir>/worker.json; it names that worker as a bootstrap member, so others
find the swarm through it), else the one swarm init saved in
<data-dir>/swarm.join. Exits 3 when the data directory has neither.

Anyone holding the string is a member and, through Ray, runs code on every
member: pass it on in a file (--join-file) or EDGELLM_JOIN, not on a command line.`

// Decision (hardening): worker no longer prints a join string when it starts
// (its stderr ends up in docker logs and journals, where anyone who reads
// them could join); it is printed only when asked, by swarm join-string.

func newSwarmCommand(app *App) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "swarm",
		Short: "Create and manage private swarms",
		Long:  swarmLong,
		Args:  usageArgs(cobra.NoArgs),
	}
	cmd.AddCommand(newSwarmInitCommand(app), newSwarmJoinStringCommand(app))
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

func newSwarmJoinStringCommand(app *App) *cobra.Command {
	return &cobra.Command{
		Use:   "join-string",
		Short: "Print the join string of this machine's swarm (running worker first)",
		Long:  swarmJoinStringLong,
		Args:  usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := app.config(cmd)
			if err != nil {
				return err
			}
			join, err := localJoinString(cfg.DataDir)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintln(app.stdout, join)
			return err
		},
	}
}

// localJoinString returns the running worker's join string (worker.json),
// else the saved one (swarm.join), checked so a damaged file is reported
// here rather than by whoever is handed the string.
func localJoinString(dataDir string) (string, error) {
	state := filepath.Join(dataDir, volunteer.StateFile)
	data, err := os.ReadFile(state)
	switch {
	case err == nil:
		var st struct {
			Join string `json:"join"`
		}
		if err := json.Unmarshal(data, &st); err != nil {
			return "", fmt.Errorf("%s: %w", state, err)
		}
		return checkedJoin(st.Join, state)
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("read %s: %w", state, err)
	}
	saved := filepath.Join(dataDir, joinFile)
	s, err := readJoinFile(saved, saved)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("%w: no swarm in %s: no running worker and no swarm.join (run edgellm swarm init)", ErrNotFound, dataDir)
	}
	if err != nil {
		return "", err
	}
	return checkedJoin(s, saved)
}

func checkedJoin(s, from string) (string, error) {
	if _, err := p2p.ParseJoin(s); err != nil {
		return "", fmt.Errorf("%s: %w", from, err)
	}
	return s, nil
}

// writeSecretFile writes a file readable by its owner only, atomically.
func writeSecretFile(path, content string) error {
	return atomicfile.Write(path, []byte(content), 0o600)
}

// joinEnv names the environment variable that may carry the join string.
const joinEnv = "EDGELLM_JOIN"

// The swarm secret's ways in (hardening: the secret leaked through process
// lists, a daemon's arguments and logs).
//
// Decisions:
//   - --join-file FILE, EDGELLM_JOIN and --join - (stdin) keep the secret out
//     of /proc/<pid>/cmdline, which every local user can read; --join STRING
//     still works for scripts and tests but its help says it is visible.
//   - Order: --join or --join-file (not both: exit 2), else EDGELLM_JOIN,
//     else <data-dir>/swarm.join.
//   - EDGELLM_JOIN is removed from this process's environment once read, so
//     the backend, Kubo and Ray processes it starts do not inherit it.
//   - The first resolve keeps the string in join, so later calls (and
//     session open, which hands it to its daemon) read no source twice.

// swarmFlags are the membership flags of worker, peers, infer, serve and
// session open.
type swarmFlags struct {
	join      string
	joinFile  string
	bootstrap []string
	noMDNS    bool
	// from names where join came from, for error messages ("" until read).
	from string
}

func (f *swarmFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.join, "join", "", "join string from `edgellm swarm init`; visible to other local users in the process list, so prefer --join-file or "+joinEnv+"; - reads it from stdin (default: <data-dir>/swarm.join)")
	fl.StringVar(&f.joinFile, "join-file", "", "read the join string from `FILE`")
	fl.StringArrayVar(&f.bootstrap, "bootstrap", nil, "extra bootstrap member address (/ip4/.../tcp/PORT/p2p/ID); repeat for several")
	fl.BoolVar(&f.noMDNS, "no-mdns", false, "do not look for members on the LAN with mDNS")
}

// given reports whether a swarm was named by a flag or EDGELLM_JOIN (not
// by the data directory's swarm.join).
func (f *swarmFlags) given() bool {
	return f.join != "" || f.joinFile != "" || os.Getenv(joinEnv) != ""
}

// load reads the join string from its source once: --join (- for stdin),
// --join-file, EDGELLM_JOIN or <data-dir>/swarm.join.
func (f *swarmFlags) load(cfg *config.Config, stdin io.Reader) error {
	if f.from != "" {
		return nil
	}
	switch {
	case f.join != "" && f.joinFile != "":
		return fmt.Errorf("%w: --join and --join-file are exclusive", ErrUsage)
	case f.join == "-":
		s, err := readJoin(stdin, "stdin")
		if err != nil {
			return err
		}
		f.join, f.from = s, "--join - (stdin)"
	case f.join != "":
		f.from = "--join"
	case f.joinFile != "":
		s, err := readJoinFile(f.joinFile, "--join-file "+f.joinFile)
		if err != nil {
			return err
		}
		f.join, f.from = s, f.joinFile
	case os.Getenv(joinEnv) != "":
		f.join, f.from = strings.TrimSpace(os.Getenv(joinEnv)), joinEnv
		os.Unsetenv(joinEnv)
	default:
		path := filepath.Join(cfg.DataDir, joinFile)
		s, err := readJoinFile(path, path)
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%w: no swarm: pass --join-file FILE or set %s, or run `edgellm swarm init` first", ErrUsage, joinEnv)
		}
		if err != nil {
			return err
		}
		f.join, f.from = s, path
	}
	return nil
}

// readJoinFile reads a join string from a file; a missing file named by a
// flag is a usage error (the data directory's is reported to the caller).
func readJoinFile(path, what string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && what != path {
			return "", fmt.Errorf("%w: %s: no such file", ErrUsage, what)
		}
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	defer fh.Close()
	return readJoin(fh, what)
}

// readJoin reads one join string (surrounding space trimmed), bounded so a
// wrong file or an endless stdin is refused rather than read whole.
func readJoin(r io.Reader, what string) (string, error) {
	if r == nil {
		return "", fmt.Errorf("%w: %s: nothing to read", ErrUsage, what)
	}
	data, err := io.ReadAll(io.LimitReader(r, p2p.MaxJoinStringLen+2))
	if err != nil {
		return "", fmt.Errorf("read %s: %w", what, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "" {
		return "", fmt.Errorf("%w: %s: empty join string", ErrUsage, what)
	}
	return s, nil
}

// resolve returns the swarm to join (see load) plus --bootstrap. A
// malformed join string is a usage error (exit 2) whose message is one line
// and never holds the string.
func (f *swarmFlags) resolve(cfg *config.Config, stdin io.Reader) (p2p.Join, error) {
	if err := f.load(cfg, stdin); err != nil {
		return p2p.Join{}, err
	}
	j, err := p2p.ParseJoin(f.join)
	if err != nil {
		return p2p.Join{}, fmt.Errorf("%w: %s: %w", ErrUsage, f.from, err)
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
