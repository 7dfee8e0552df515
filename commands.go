// commands.go defines each `dfs` subcommand: its flags, its arguments and
// how its result is printed. The work itself is in master.go, minion.go,
// dev.go and client.go.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/urfave/cli/v2"
)

// ---- daemons ----

func masterCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "master",
		Usage:       "run the master (namespace server)",
		Description: "Example: dfs master --addr :2131 --dir ./dfs-master --replication 3",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "addr", Value: ":2131", Usage: "`HOST:PORT` to listen on"},
			&cli.StringFlag{Name: "dir", Value: "dfs-master", Usage: "`DIR` for the metadata"},
			httpFlag(defaultMasterHTTP),
			&cli.StringFlag{Name: "peers", Usage: "replicated masters (Raft): every master's `NAME=HOST:PORT` (its id and Raft address), comma-separated; this one among them"},
			&cli.StringFlag{Name: "id", Usage: "this master's `NAME` in --peers"},
			&cli.StringFlag{Name: "raft", Usage: "`HOST:PORT` Raft listens on (default: this master's address in --peers)"},
			&cli.BoolFlag{Name: "join", Usage: "with --peers, on a first start: do not found a cluster, wait to be added (dfs master add-peer)"},
		}, clusterFlags()...),
		Subcommands: []*cli.Command{addPeerCommand(e), removePeerCommand(e)},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(c, "unexpected argument %q", c.Args().First())
			}
			m := NewMaster(c.String("dir"), c.String("addr"))
			if err := applyClusterFlags(c, m); err != nil {
				return err
			}
			if c.IsSet("peers") {
				peers, err := parsePeers(c.String("peers"))
				if err != nil {
					return usagef(c, "--peers: %v", err)
				}
				m.Peers, m.ID, m.RaftAddr, m.Join = peers, c.String("id"), c.String("raft"), c.Bool("join")
				if !slices.ContainsFunc(peers, func(p Peer) bool { return p.ID == m.ID }) {
					return usagef(c, "--id %q: want one of the names in --peers", m.ID)
				}
			} else if c.IsSet("id") || c.IsSet("raft") || c.IsSet("join") {
				return usagef(c, "--id, --raft and --join are for replicated masters: give --peers too")
			}
			m.Logger = e.logger
			m.Security = e.security
			m.HTTPAddr, m.HTTPRequired = c.String("http"), c.IsSet("http")
			if err := m.Start(); err != nil {
				return err
			}
			<-c.Context.Done()
			e.logger.Info("shutting down (signal again to force)")
			return m.Close()
		},
	}
}

func addPeerCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "add-peer",
		Usage:     "add a master to the replicated masters (start it first with --peers ... --join)",
		ArgsUsage: "NAME=HOST:PORT",
		Description: "NAME is the new master's --id, HOST:PORT its Raft address.\n" +
			"Example: dfs master add-peer --master m1:2131,m2:2131,m3:2131 m4=m4:2132",
		Flags: []cli.Flag{masterFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "add-peer takes one NAME=HOST:PORT")
			}
			peers, err := parsePeers(c.Args().First())
			if err != nil || len(peers) != 1 {
				return usagef(c, "add-peer: want one NAME=HOST:PORT, got %q", c.Args().First())
			}
			cl := newClient(c, e)
			defer cl.Close()
			if err := cl.AddMaster(c.Context, peers[0].ID, peers[0].Addr); err != nil {
				return fmt.Errorf("add-peer %s: %w", peers[0].ID, err)
			}
			return nil
		},
	}
}

func removePeerCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "remove-peer",
		Usage:       "remove a master from the replicated masters",
		ArgsUsage:   "NAME",
		Description: "Example: dfs master remove-peer --master m1:2131,m2:2131,m3:2131 m3",
		Flags:       []cli.Flag{masterFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 || c.Args().First() == "" {
				return usagef(c, "remove-peer takes one NAME")
			}
			cl := newClient(c, e)
			defer cl.Close()
			if err := cl.RemoveMaster(c.Context, c.Args().First()); err != nil {
				return fmt.Errorf("remove-peer %s: %w", c.Args().First(), err)
			}
			return nil
		},
	}
}

// clusterFlags are the master's settings, shared by `dfs master` and `dfs dev`.
func clusterFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "block-size", Value: "64MiB", Usage: "default block `SIZE` (e.g. 64MiB, 512KiB, 1048576)"},
		&cli.IntFlag{Name: "replication", Value: DefaultReplication, Usage: "default number of replicas of each block"},
		&cli.DurationFlag{Name: "heartbeat", Value: DefaultHeartbeat, Usage: "heartbeat interval of minions"},
		&cli.DurationFlag{Name: "dead-after", Value: DefaultDeadAfter, Usage: "silence after which a minion counts as dead"},
		&cli.DurationFlag{Name: "safe-mode-timeout", Usage: "after a restart, the longest wait for block reports before re-replicating (default: --dead-after)"},
	}
}

func applyClusterFlags(c *cli.Context, m *Master) error {
	bs, err := parseSize(c.String("block-size"))
	if err != nil {
		return usagef(c, "--block-size: %v", err)
	}
	if err := validBlockSize(bs); err != nil {
		return usagef(c, "--block-size: %v", err)
	}
	m.BlockSize = bs
	m.Replication = c.Int("replication")
	m.Heartbeat = c.Duration("heartbeat")
	m.DeadAfter = c.Duration("dead-after")
	m.SafeModeTimeout = c.Duration("safe-mode-timeout")
	return nil
}

// securityFlags are how a process trusts its peers (auth.go): every command
// that talks to the cluster takes them; servers (master, minion, dev) also
// take --insecure.
func securityFlags(server bool) []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: "secret-file", EnvVars: []string{"DFS_SECRET_FILE"}, Usage: "`FILE` with the cluster secret (make one with: dfs secret new > FILE)"},
		&cli.StringFlag{Name: "tls-cert", EnvVars: []string{"DFS_TLS_CERT"}, Usage: "PEM certificate `FILE`: TLS on every connection (servers need it with --tls-key)"},
		&cli.StringFlag{Name: "tls-key", EnvVars: []string{"DFS_TLS_KEY"}, Usage: "PEM private key `FILE` of --tls-cert"},
		&cli.StringFlag{Name: "tls-ca", EnvVars: []string{"DFS_TLS_CA"}, Usage: "PEM `FILE` of the CA that signed the cluster's certificates (default: the system's)"},
	}
	if server {
		fs = append(fs, &cli.BoolFlag{Name: "insecure", Usage: "without a secret, take peers from any address, not only loopback (anyone who reaches the port can do anything)"})
	}
	return fs
}

// securityFrom reads the security flags of c. dev, if not empty, is a
// directory where a secret is made when none is given (dfs dev).
func securityFrom(c *cli.Context, server bool, dev string) (*Security, string, error) {
	s := &Security{}
	path := c.String("secret-file")
	if path == "" && dev != "" {
		path = filepath.Join(dev, "secret")
		if err := os.MkdirAll(dev, 0o755); err != nil {
			return nil, "", err
		}
		if err := writeSecretFile(path); err != nil && !errors.Is(err, os.ErrExist) {
			return nil, "", fmt.Errorf("secret: %w", err)
		}
	}
	if path != "" {
		secret, err := loadSecret(path)
		if err != nil {
			return nil, "", err
		}
		s.Secret = secret
		if abs, err := filepath.Abs(path); err == nil {
			path = abs
		}
	}
	var err error
	if s.TLSServer, s.TLSClient, err = loadTLS(c.String("tls-cert"), c.String("tls-key"), c.String("tls-ca")); err != nil {
		return nil, "", err
	}
	if server {
		s.Insecure = c.Bool("insecure")
		if s.TLSClient != nil && s.TLSServer == nil {
			return nil, "", usagef(c, "TLS on a server needs --tls-cert and --tls-key")
		}
	}
	return s, path, nil
}

func secretCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "secret",
		Usage: "make a cluster secret",
		Subcommands: []*cli.Command{{
			Name:      "new",
			Usage:     "write a fresh random cluster secret to FILE (created with mode 0600), or to stdout",
			ArgsUsage: "[FILE]",
			Description: "Examples: dfs secret new > /etc/dfs/secret ; dfs secret new /etc/dfs/secret\n" +
				"Then give every process --secret-file FILE (or DFS_SECRET_FILE=FILE).",
			Action: func(c *cli.Context) error {
				switch c.NArg() {
				case 0:
					// A redirect to a file makes it with the umask's
					// mode: narrow it before the secret is in it.
					if f, ok := e.stdout.(*os.File); ok {
						if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
							if err := f.Chmod(0o600); err != nil {
								return fmt.Errorf("secret new: %w", err)
							}
						}
					}
					_, err := fmt.Fprintln(e.stdout, newSecret())
					return err
				case 1:
					if err := writeSecretFile(c.Args().First()); err != nil {
						return fmt.Errorf("secret new: %w", err)
					}
					return nil
				}
				return usagef(c, "want at most one FILE")
			},
		}},
	}
}

// defaultMasterHTTP is the master's web address, as HDFS's NameNode's.
const defaultMasterHTTP = "127.0.0.1:9870"

// httpFlag is --http, the web listener of the status pages (web.go,
// web_minion.go) and /metrics (metrics.go).
func httpFlag(def string) cli.Flag {
	usage := "`HOST:PORT` of the web listener (status pages, /api, /metrics); loopback needs nothing, another address needs the cluster secret on every request or --insecure"
	if def == "" {
		usage += " (default: none)"
	} else {
		usage += "; empty: none"
	}
	return &cli.StringFlag{Name: "http", Value: def, Usage: usage}
}

func masterFlag() cli.Flag {
	return &cli.StringFlag{Name: "master", Aliases: []string{"m"}, Value: DefaultMasterAddr, EnvVars: []string{"DFS_MASTER"},
		Usage: "the master's `HOST:PORT`"}
}

func minionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "minion",
		Usage:       "run a minion (block server)",
		Description: "Example: dfs minion --port 8888 --master 10.0.0.1:2131 --dir /data/dfs",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 8888, Usage: "`PORT` to listen on (0: any free port)"},
			&cli.StringFlag{Name: "host", Usage: "host or IP that clients and other minions use to reach this minion (default: the bind IP, else the local IP of the route to the master)"},
			&cli.StringFlag{Name: "bind", Usage: "`IP` to listen on (default: all interfaces)"},
			&cli.StringFlag{Name: "dir", Usage: "`DIR` for the blocks (default: dfs-minion-PORT)"},
			masterFlag(),
			&cli.DurationFlag{Name: "heartbeat", Usage: "heartbeat interval (default: the master's)"},
			&cli.DurationFlag{Name: "report-interval", Value: DefaultReportInterval, Usage: "interval of full block reports"},
			&cli.DurationFlag{Name: "scrub-interval", Value: DefaultScrubInterval, Usage: "start a pass re-reading every block this often (0: no scrubbing)"},
			&cli.StringFlag{Name: "scrub-rate", Value: "32MiB", Usage: "most bytes a second the scrubber reads"},
			httpFlag(""),
			&cli.StringFlag{Name: "pack-max", Value: "1MiB", Usage: "pack blocks of up to `SIZE` that arrive in one packet into shared volume files (0: a file per block; at most 1MiB)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(c, "unexpected argument %q", c.Args().First())
			}
			port := c.Int("port")
			if port < 0 || port > 65535 {
				return usagef(c, "--port %d is not a TCP port", port)
			}
			dir := c.String("dir")
			if dir == "" {
				if port == 0 {
					return usagef(c, "--port 0 needs --dir")
				}
				dir = fmt.Sprintf("dfs-minion-%d", port)
			}
			m := NewMinion(dir, net.JoinHostPort(c.String("bind"), strconv.Itoa(port)), c.String("master"))
			m.Host = c.String("host")
			m.Heartbeat = c.Duration("heartbeat")
			m.ReportInterval = c.Duration("report-interval")
			m.ScrubInterval = c.Duration("scrub-interval")
			rate, err := parseSize(c.String("scrub-rate"))
			if err != nil || rate == 0 {
				return usagef(c, "--scrub-rate: bad rate %q", c.String("scrub-rate"))
			}
			m.ScrubRate = rate
			packMax, err := parseSize(c.String("pack-max"))
			if err != nil || packMax > DefaultPackMax {
				return usagef(c, "--pack-max: want a size of at most 1MiB, not %q", c.String("pack-max"))
			}
			m.PackMax = packMax
			m.Logger = e.logger
			m.Security = e.security
			m.HTTPAddr = c.String("http")
			if err := m.Start(); err != nil {
				return err
			}
			<-c.Context.Done()
			e.logger.Info("shutting down (signal again to force)")
			return m.Close()
		},
	}
}

func devCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a master and N minions in this process, on loopback",
		Description: "The quickest way to try dfs. Ctrl+C stops the cluster and saves its state in --dir.\n" +
			"Example: dfs dev --minions 3 & dfs put photo.jpg && dfs get photo.jpg > copy.jpg",
		Flags: append([]cli.Flag{
			&cli.IntFlag{Name: "minions", Aliases: []string{"n"}, Value: 3, Usage: "number of minions"},
			&cli.StringFlag{Name: "dir", Value: "dfs-dev", Usage: "`DIR` for the master's and the minions' data"},
			&cli.StringFlag{Name: "addr", Value: DefaultMasterAddr, Usage: "master's `HOST:PORT` (port 0: any free port)"},
			httpFlag(defaultMasterHTTP),
		}, clusterFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(c, "unexpected argument %q", c.Args().First())
			}
			if c.Int("minions") < 1 || c.Int("minions") > 64 {
				return usagef(c, "--minions %d (want 1 to 64)", c.Int("minions"))
			}
			sec, secretPath, err := securityFrom(c, true, c.String("dir"))
			if err != nil {
				return err
			}
			cl := &DevCluster{Dir: c.String("dir"), Addr: c.String("addr"), Minions: c.Int("minions"), Logger: e.logger, Security: sec}
			cl.Configure = func(m *Master) error {
				m.HTTPAddr, m.HTTPRequired = c.String("http"), c.IsSet("http")
				return applyClusterFlags(c, m)
			}
			if c.String("http") != "" {
				// Each minion's status page, on a free loopback port,
				// for the master's minions page to link to.
				cl.ConfigureMinion = func(mn *Minion) { mn.HTTPAddr = "127.0.0.1:0" }
			}
			if err := cl.Start(); err != nil {
				return err
			}
			addr := cl.Master.AddrString()
			fmt.Fprintf(e.stdout, "DFS_MASTER=%s\n", addr)
			fmt.Fprintf(e.stdout, "DFS_SECRET_FILE=%s\n", secretPath)
			fmt.Fprintf(e.stdout, "# dfs dev: master at %s with %d minions, data in %s; Ctrl+C stops it\n", addr, c.Int("minions"), c.String("dir"))
			fmt.Fprintf(e.stdout, "# try: export DFS_MASTER=%s DFS_SECRET_FILE=%s; dfs put FILE; dfs ls; dfs get FILE > copy\n", addr, secretPath)
			<-c.Context.Done()
			e.logger.Info("shutting down (signal again to force)")
			return cl.Close()
		},
	}
}

// ---- client verbs ----

func putCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "put",
		Usage:     "store a local file in dfs",
		ArgsUsage: "LOCAL [REMOTE]",
		Description: "REMOTE defaults to /NAME of LOCAL; '-' as LOCAL reads stdin and needs REMOTE.\n" +
			"Examples: dfs put photo.jpg ; dfs put big.iso /isos/big.iso ; tar c dir | dfs put - /backup.tar",
		Flags: append([]cli.Flag{
			masterFlag(),
			&cli.IntFlag{Name: "replication", Aliases: []string{"r"}, Usage: "replicas of each block (default: the master's)"},
			&cli.StringFlag{Name: "block-size", Aliases: []string{"b"}, Usage: "block `SIZE`, e.g. 64MiB (default: the master's)"},
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace an existing file"},
		}, progressFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return usagef(c, "put takes LOCAL [REMOTE]")
			}
			local, remote := c.Args().Get(0), c.Args().Get(1)
			opt := PutOptions{Replication: c.Int("replication"), Force: c.Bool("force")}
			if opt.Replication < 0 || opt.Replication > maxReplication {
				return usagef(c, "--replication %d (want 1 to %d)", opt.Replication, maxReplication)
			}
			if s := c.String("block-size"); s != "" {
				bs, err := parseSize(s)
				if err == nil {
					err = validBlockSize(bs)
				}
				if err != nil {
					return usagef(c, "--block-size: %v", err)
				}
				opt.BlockSize = bs
			}
			var in io.Reader
			size := int64(-1)
			if local == "-" {
				if remote == "" {
					return usagef(c, "put - (stdin) needs a REMOTE path")
				}
				in = e.stdin
			} else {
				f, err := openLocal(local)
				if err != nil {
					return fmt.Errorf("put: %w", err)
				}
				defer f.Close()
				in = f
				if st, err := f.Stat(); err == nil {
					size = st.Size()
				}
				if remote == "" {
					remote = filepath.Base(local)
				}
			}
			bar := newProgress(c, e, "put "+remote, size)
			if bar != nil {
				in = countingReader{in, bar}
			}
			cl := newClient(c, e)
			defer cl.Close()
			if _, err := cl.Put(c.Context, in, remote, opt); err != nil {
				if bar != nil {
					bar.Exit()
					fmt.Fprintln(e.stderr)
				}
				return fmt.Errorf("put %s: %w", remote, err)
			}
			if bar != nil {
				bar.Finish()
			}
			return nil
		},
	}
}

// openLocal opens a regular local file for reading.
func openLocal(name string) (*os.File, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if st.IsDir() {
		f.Close()
		return nil, fmt.Errorf("%s: is a directory", name)
	}
	return f, nil
}

func newClient(c *cli.Context, e *env) *Client {
	cl := NewClient(c.String("master"))
	cl.Logger = e.logger
	cl.SetSecurity(e.security)
	return cl
}

func getCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "get",
		Usage:       "write a dfs file to stdout (or to LOCAL)",
		ArgsUsage:   "REMOTE [LOCAL]",
		Description: "Examples: dfs get photo.jpg > copy.jpg ; dfs get /isos/big.iso big.iso ; dfs get --offset 1MiB --length 512 /f",
		Flags: append([]cli.Flag{masterFlag(),
			&cli.StringFlag{Name: "offset", Usage: "start at byte `N` (a SIZE: 1MiB works)"},
			&cli.StringFlag{Name: "length", Usage: "at most `N` bytes (a SIZE; default: to the end)"},
		}, progressFlags()...),
		Action: func(c *cli.Context) error {
			if c.NArg() < 1 || c.NArg() > 2 {
				return usagef(c, "get takes REMOTE [LOCAL]")
			}
			remote, local := c.Args().Get(0), c.Args().Get(1)
			offset, length, err := rangeFlags(c)
			if err != nil {
				return err
			}
			cl := newClient(c, e)
			defer cl.Close()
			err = getTo(c, e, cl, remote, local, offset, length)
			if err != nil {
				return fmt.Errorf("get %s: %w", remote, err)
			}
			return nil
		},
	}
}

// getTo writes remote to local: stdout if local is "" or "-", else a file
// made whole at the end (into the directory local, if it is one). A
// progress bar, if one is to be shown, counts the bytes.
func getTo(c *cli.Context, e *env, cl *Client, remote, local string, offset, length int64) error {
	var bar *progressbar.ProgressBar
	if wantProgress(c, e) {
		fi, err := cl.Stat(c.Context, remote)
		if err != nil {
			return err
		}
		size := max(fi.Size-offset, 0)
		if length >= 0 {
			size = min(size, length)
		}
		bar = newProgress(c, e, "get "+remote, size)
	}
	get := func(w io.Writer) error {
		if bar != nil {
			w = countingWriter{w, bar}
		}
		_, err := cl.GetRange(c.Context, remote, offset, length, w)
		if bar != nil {
			if err != nil {
				bar.Exit()
				fmt.Fprintln(e.stderr)
			} else {
				bar.Finish()
			}
		}
		return err
	}
	if local == "" || local == "-" {
		return get(e.stdout)
	}
	if st, err := os.Stat(local); err == nil && st.IsDir() {
		local = filepath.Join(local, path.Base("/"+remote)) // like cp
	}
	// A local file appears only complete: write a temp file beside it
	// and rename it at the end.
	return writeFileAtomic(local, get)
}

// rangeFlags reads get's --offset and --length; length is -1 when not set.
func rangeFlags(c *cli.Context) (offset, length int64, err error) {
	length = -1
	if s := c.String("offset"); s != "" {
		if offset, err = parseSize(s); err != nil {
			return 0, 0, usagef(c, "--offset: %v", err)
		}
	}
	if s := c.String("length"); s != "" {
		if length, err = parseSize(s); err != nil {
			return 0, 0, usagef(c, "--length: %v", err)
		}
	}
	return offset, length, nil
}

func catCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "cat",
		Usage:       "write dfs files to stdout, one after the other",
		ArgsUsage:   "PATH...",
		Description: "Example: dfs cat /logs/a /logs/b | grep error",
		Flags:       []cli.Flag{masterFlag()},
		Action: func(c *cli.Context) error {
			if c.NArg() == 0 {
				return usagef(c, "cat takes at least one PATH")
			}
			cl := newClient(c, e)
			defer cl.Close()
			for _, p := range c.Args().Slice() {
				if _, err := cl.Get(c.Context, p, e.stdout); err != nil {
					return fmt.Errorf("cat %s: %w", p, err)
				}
			}
			return nil
		},
	}
}

// humanFlag is -h of ls, du, df and report: sizes in KiB, MiB, ... (help is --help
// only, as in HDFS's and coreutils' du and df).
func humanFlag() cli.Flag {
	return &cli.BoolFlag{Name: "human-readable", Aliases: []string{"h"}, Usage: "sizes as 1.5 MiB rather than bytes"}
}

// sizeText is n in bytes, or human-readable with -h.
func sizeText(c *cli.Context, n int64) string {
	if c.Bool("human-readable") {
		return humanSize(n)
	}
	return strconv.FormatInt(n, 10)
}

// duEntry is one line of du: the bytes of the files at or below Path, and
// those bytes times each file's replication.
type duEntry struct {
	Path         string `json:"path"`
	Size         int64  `json:"size"`
	WithReplicas int64  `json:"size_with_replicas"`
	Files        int    `json:"files"`
}

func duCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "du",
		Usage:     "show the space of a directory's entries (or, with -s, of PATH): bytes, and bytes with replicas",
		ArgsUsage: "[PATH]",
		Description: "Columns, as HDFS's du: size, size with replicas (what the minions' disks hold), path.\n" +
			"Example: dfs du -s -h /backups",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "summary", Aliases: []string{"s"}, Usage: "one line: the total of PATH"},
			humanFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usagef(c, "du takes at most one PATH")
			}
			p := c.Args().First()
			if p == "" {
				p = "/"
			}
			cl := newClient(c, e)
			defer cl.Close()
			entries, err := du(c.Context, cl, p, c.Bool("summary"))
			if err != nil {
				return fmt.Errorf("du %s: %w", p, err)
			}
			if c.Bool("json") {
				return printJSON(e.stdout, entries)
			}
			rows := make([][3]string, len(entries))
			var w [2]int
			for i, d := range entries {
				rows[i] = [3]string{sizeText(c, d.Size), sizeText(c, d.WithReplicas), d.Path}
				w[0], w[1] = max(w[0], len(rows[i][0])), max(w[1], len(rows[i][1]))
			}
			for _, r := range rows {
				fmt.Fprintf(e.stdout, "%-*s  %-*s  %s\n", w[0], r[0], w[1], r[1], r[2])
			}
			return nil
		},
	}
}

// du adds up the files at or below p: one entry for p if summary (or p is
// a file), else one for each entry of the directory p. It lists p's
// subtree once, so it costs in proportion to it.
func du(ctx context.Context, cl *Client, p string, summary bool) ([]duEntry, error) {
	fi, err := cl.Stat(ctx, p)
	if err != nil {
		return nil, err
	}
	if !fi.Dir {
		return []duEntry{{Path: fi.Path, Size: fi.Size, WithReplicas: fi.Size * int64(fi.Replication), Files: 1}}, nil
	}
	all, err := cl.List(ctx, fi.Path, true)
	if err != nil {
		return nil, err
	}
	total := duEntry{Path: fi.Path}
	var out []duEntry
	index := map[string]int{} // child path -> its entry in out
	prefix := strings.TrimSuffix(fi.Path, "/") + "/"
	for _, f := range all {
		rel, ok := strings.CutPrefix(f.Path, prefix)
		if !ok {
			continue
		}
		child := prefix + strings.SplitN(rel, "/", 2)[0]
		i, seen := index[child]
		if !seen && !summary {
			i, seen = len(out), true
			index[child] = i
			out = append(out, duEntry{Path: child})
		}
		if f.Dir {
			continue
		}
		add := func(d *duEntry) {
			d.Size += f.Size
			d.WithReplicas += f.Size * int64(f.Replication)
			d.Files++
		}
		add(&total)
		if seen && !summary {
			add(&out[i])
		}
	}
	if summary {
		return []duEntry{total}, nil
	}
	slices.SortFunc(out, func(a, b duEntry) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// dfReport is the space of the cluster: of its live (and draining) minions.
type dfReport struct {
	Master    string `json:"master"`
	Size      int64  `json:"size"`
	Used      int64  `json:"used"`
	Available int64  `json:"available"`
	Minions   int    `json:"live_minions"`
}

// spaceOf adds up the space of r's live (and draining) minions, as df
// shows it; Master is left empty.
func spaceOf(r *ReportReply) dfReport {
	var d dfReport
	var s space
	for _, mn := range r.Minions {
		if mn.State == stateLive || mn.State == stateDecommissioning {
			s.add(mn)
			d.Minions++
		}
	}
	d.Size, d.Used, d.Available = s.capacity, s.used, s.free
	return d
}

// space adds up the space of minions: the bytes each holds, and the
// capacity and free space of each disk once, however many minions share
// it (as the minions of `dfs dev`, or several on one machine, do).
type space struct {
	capacity, used, free int64
	seen                 map[string]bool
}

func (s *space) add(mn MinionInfo) {
	s.used += mn.Used
	if mn.Disk != "" {
		if s.seen[mn.Disk] {
			return
		}
		if s.seen == nil {
			s.seen = make(map[string]bool)
		}
		s.seen[mn.Disk] = true
	}
	s.capacity += mn.Capacity
	s.free += mn.Free
}

func dfCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "df",
		Usage: "show the cluster's capacity, used and available space (of its live minions)",
		Flags: []cli.Flag{masterFlag(), humanFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(c, "df takes no arguments")
			}
			cl := newClient(c, e)
			defer cl.Close()
			r, err := cl.Report(c.Context)
			if err != nil {
				return fmt.Errorf("df: %w", err)
			}
			d := spaceOf(r)
			d.Master = c.String("master")
			if c.Bool("json") {
				return printJSON(e.stdout, d)
			}
			use := "-"
			if d.Size > 0 {
				use = fmt.Sprintf("%d%%", (d.Used*100+d.Size-1)/d.Size)
			}
			rows := [2][5]string{{"Filesystem", "Size", "Used", "Available", "Use%"},
				{"dfs://" + d.Master, sizeText(c, d.Size), sizeText(c, d.Used), sizeText(c, d.Available), use}}
			for _, r := range rows {
				fmt.Fprintf(e.stdout, "%-28s %12s %12s %12s %5s\n", r[0], r[1], r[2], r[3], r[4])
			}
			return nil
		},
	}
}

func lsCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "ls",
		Usage:       "list a directory (default /)",
		ArgsUsage:   "[PATH]",
		Description: "Columns: type (- file, d directory), replication, size in bytes (-h: KiB, MiB, ...), modified, path.",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"R"}, Usage: "list every file and directory below PATH"},
			humanFlag(),
			&cli.BoolFlag{Name: "json", Usage: "print a JSON array"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usagef(c, "ls takes at most one PATH")
			}
			p := c.Args().First()
			if p == "" {
				p = "/"
			}
			cl := newClient(c, e)
			defer cl.Close()
			entries, err := cl.List(c.Context, p, c.Bool("recursive"))
			if err != nil {
				return fmt.Errorf("ls %s: %w", p, err)
			}
			if c.Bool("json") {
				out := make([]jsonFile, 0, len(entries))
				for _, fi := range entries {
					out = append(out, toJSON(fi, false))
				}
				return printJSON(e.stdout, out)
			}
			rows := make([][3]string, 0, len(entries))
			var w [2]int
			for _, fi := range entries {
				r := [3]string{strconv.Itoa(fi.Replication), sizeText(c, fi.Size), fi.Path}
				if fi.Dir {
					r[0], r[2] = "-", fi.Path+"/"
				}
				w[0], w[1] = max(w[0], len(r[0])), max(w[1], len(r[1]))
				rows = append(rows, r)
			}
			for i, fi := range entries {
				kind := "-"
				if fi.Dir {
					kind = "d"
				}
				fmt.Fprintf(e.stdout, "%s %*s %*s %s %s\n", kind, w[0], rows[i][0], w[1], rows[i][1],
					fi.ModTime.Local().Format("2006-01-02 15:04"), rows[i][2])
			}
			return nil
		},
	}
}

func statCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "stat",
		Usage:     "show a file's size, replication and blocks with their replicas",
		ArgsUsage: "PATH",
		Flags:     []cli.Flag{masterFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "stat takes one PATH")
			}
			cl := newClient(c, e)
			defer cl.Close()
			fi, err := cl.Stat(c.Context, c.Args().First())
			if err != nil {
				return fmt.Errorf("stat %s: %w", c.Args().First(), err)
			}
			if c.Bool("json") {
				return printJSON(e.stdout, toJSON(fi, true))
			}
			w := e.stdout
			if fi.Dir {
				fmt.Fprintf(w, "path:        %s\ntype:        directory\n", fi.Path)
				return nil
			}
			fmt.Fprintf(w, "path:        %s\ntype:        file\nsize:        %d (%s)\nreplication: %d\nblock size:  %s\nmodified:    %s\nblocks:      %d\n",
				fi.Path, fi.Size, humanSize(fi.Size), fi.Replication, humanSize(fi.BlockSize), fi.ModTime.Local().Format(time.RFC3339), len(fi.Blocks))
			for _, b := range fi.Blocks {
				reps := strings.Join(b.Replicas, " ")
				if len(b.Replicas) < fi.Replication {
					reps += fmt.Sprintf("  (%d of %d live)", len(b.Replicas), fi.Replication)
				}
				fmt.Fprintf(w, "  %s  %10d  crc32c %08x  %s\n", blockName(b.ID), b.Size, b.CRC, reps)
			}
			return nil
		},
	}
}

func rmCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "rm",
		Usage:     "remove a file or an empty directory (with -r, a directory and all below it)",
		ArgsUsage: "PATH...",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "recursive", Aliases: []string{"r"}, Usage: "remove directories and their contents"},
		},
		Action: func(c *cli.Context) error {
			return eachPath(c, e, "rm", func(cl *Client, p string) error {
				_, err := cl.Remove(c.Context, p, c.Bool("recursive"))
				return err
			})
		},
	}
}

func mkdirCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "mkdir",
		Usage:       "make directories",
		ArgsUsage:   "PATH...",
		Description: "Example: dfs mkdir -p /logs/2026/12",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "parents", Aliases: []string{"p"}, Usage: "make missing parents too; an existing directory is no error"},
		},
		Action: func(c *cli.Context) error {
			return eachPath(c, e, "mkdir", func(cl *Client, p string) error {
				return cl.Mkdir(c.Context, p, c.Bool("parents"))
			})
		},
	}
}

// eachPath runs fn for each PATH argument of verb, going on after a
// failure, and returns the failures, each naming its path.
func eachPath(c *cli.Context, e *env, verb string, fn func(cl *Client, p string) error) error {
	if c.NArg() < 1 {
		return usagef(c, "%s takes PATH...", verb)
	}
	cl := newClient(c, e)
	defer cl.Close()
	var errs []error
	for _, p := range c.Args().Slice() {
		if err := fn(cl, p); err != nil {
			errs = append(errs, fmt.Errorf("%s %s: %w", verb, p, err))
		}
	}
	return errors.Join(errs...)
}

func mvCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "mv",
		Usage:     "move or rename a file or directory (into DST when DST is a directory)",
		ArgsUsage: "SRC DST",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace a file at the destination"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usagef(c, "mv takes SRC DST")
			}
			src, dst := c.Args().Get(0), c.Args().Get(1)
			cl := newClient(c, e)
			defer cl.Close()
			if _, err := cl.Rename(c.Context, src, dst, c.Bool("force")); err != nil {
				return fmt.Errorf("mv %s %s: %w", src, dst, err)
			}
			return nil
		},
	}
}

func setrepCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "setrep",
		Usage:     "change the replication of a file, or of every file below a directory",
		ArgsUsage: "N PATH",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "wait", Aliases: []string{"w"}, Usage: "wait until every block has exactly N live replicas"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return usagef(c, "setrep takes N PATH")
			}
			n, err := strconv.Atoi(c.Args().Get(0))
			if err != nil {
				return usagef(c, "N must be a number, not %q", c.Args().Get(0))
			}
			p := c.Args().Get(1)
			cl := newClient(c, e)
			defer cl.Close()
			if _, err := cl.SetReplication(c.Context, p, n); err != nil {
				return fmt.Errorf("setrep %s: %w", p, err)
			}
			if !c.Bool("wait") {
				return nil
			}
			err = pollUntil(c.Context, 500*time.Millisecond, func() (bool, error) {
				r, err := cl.Fsck(c.Context, p)
				if err != nil {
					return false, err
				}
				if slices.ContainsFunc(r.Blocks, func(b FsckBlock) bool { return b.Live != n || len(b.Replicas) != n }) {
					return false, nil
				}
				fmt.Fprintf(e.stdout, "%s: %d replicas of each of %d blocks\n", p, n, len(r.Blocks))
				return true, nil
			})
			if err != nil {
				return fmt.Errorf("setrep %s: %w", p, err)
			}
			return nil
		},
	}
}

func reportCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "show every minion's state, capacity and use, and cluster totals",
		Flags: []cli.Flag{masterFlag(), humanFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef(c, "report takes no arguments")
			}
			cl := newClient(c, e)
			defer cl.Close()
			r, err := cl.Report(c.Context)
			if err != nil {
				return fmt.Errorf("report: %w", err)
			}
			if c.Bool("json") {
				return printJSON(e.stdout, toJSONReport(r))
			}
			w := e.stdout
			safe := "off"
			if r.SafeMode {
				safe = "ON (waiting for block reports)"
			}
			fmt.Fprintf(w, "cluster %s  safe mode %s  files %d  blocks %d\n", r.ClusterID, safe, r.Files, r.Blocks)
			if len(r.Masters) > 0 {
				fmt.Fprintf(w, "%-10s %-22s %-22s %8s %10s %10s\n", "MASTER", "ADDR", "ROLE", "TERM", "COMMITTED", "APPLIED")
				for _, mi := range r.Masters {
					fmt.Fprintf(w, "%-10s %-22s %-22s %8d %10d %10d", mi.ID, cmp.Or(mi.Addr, "-"), mi.Role, mi.Term, mi.Commit, mi.Applied)
					if mi.Err != "" {
						fmt.Fprintf(w, "  (%s)", mi.Err)
					}
					fmt.Fprintln(w)
				}
			}
			fmt.Fprintf(w, "%-22s %-16s %14s %14s %14s %8s %9s\n", "MINION", "STATE", "CAPACITY", "USED", "FREE", "BLOCKS", "HEARTBEAT")
			var total space
			states := map[string]int{}
			for _, mn := range r.Minions {
				fmt.Fprintf(w, "%-22s %-16s %14s %14s %14s %8d %8.1fs\n", mn.Addr, mn.State, sizeText(c, mn.Capacity),
					sizeText(c, mn.Used), sizeText(c, mn.Free), mn.Blocks, mn.LastHeartbeat.Seconds())
				states[mn.State]++
				if mn.State != stateDead {
					total.add(mn)
				}
			}
			fmt.Fprintf(w, "minions %d: %d live, %d dead, %d decommissioning, %d decommissioned; capacity %s, used %s, free %s\n",
				len(r.Minions), states[stateLive], states[stateDead], states[stateDecommissioning], states[stateDecommissioned],
				sizeText(c, total.capacity), sizeText(c, total.used), sizeText(c, total.free))
			return nil
		},
	}
}

func fsckCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "fsck",
		Usage:     "check that every block below PATH (default /) has its replication; exit 1 if not",
		ArgsUsage: "[PATH]",
		Flags:     []cli.Flag{masterFlag(), &cli.BoolFlag{Name: "json", Usage: "print JSON, every block"}},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return usagef(c, "fsck takes at most one PATH")
			}
			p := c.Args().First()
			if p == "" {
				p = "/"
			}
			cl := newClient(c, e)
			defer cl.Close()
			r, err := cl.Fsck(c.Context, p)
			if err != nil {
				return fmt.Errorf("fsck %s: %w", p, err)
			}
			counts := map[string]int{}
			for _, b := range r.Blocks {
				counts[b.Status]++
			}
			if c.Bool("json") {
				if err := printJSON(e.stdout, toJSONFsck(r)); err != nil {
					return err
				}
			} else {
				for _, b := range r.Blocks {
					if b.Status == statusHealthy {
						continue
					}
					fmt.Fprintf(e.stdout, "%s block %d (%s): %s, %d of %d replicas live: %s", b.Path, b.Index, blockName(b.ID),
						b.Status, b.Live, b.Expected, strings.Join(b.Replicas, " "))
					if len(b.Corrupt) > 0 {
						fmt.Fprintf(e.stdout, " corrupt: %s", strings.Join(b.Corrupt, " "))
					}
					if b.Note != "" {
						fmt.Fprintf(e.stdout, " (%s)", b.Note)
					}
					fmt.Fprintln(e.stdout)
				}
				fmt.Fprintf(e.stdout, "%s: %d files, %d blocks: %d healthy, %d under-replicated, %d corrupt, %d missing\n", p,
					r.Files, len(r.Blocks), counts[statusHealthy], counts[statusUnderReplicated], counts[statusCorrupt], counts[statusMissing])
				if r.SafeMode {
					fmt.Fprintln(e.stdout, "the master is in safe mode: minions are still reporting their blocks")
				}
			}
			if bad := len(r.Blocks) - counts[statusHealthy]; bad > 0 {
				return fmt.Errorf("fsck %s: %d of %d blocks are not healthy", p, bad, len(r.Blocks))
			}
			return nil
		},
	}
}

func decommissionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:        "decommission",
		Usage:       "drain a minion: copy its blocks elsewhere so that it can be stopped",
		ArgsUsage:   "HOST:PORT",
		Description: "'dfs report' shows the minion as decommissioned when it is safe to stop.",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "wait", Usage: "wait until the minion is decommissioned"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "decommission takes one HOST:PORT")
			}
			addr := c.Args().First()
			cl := newClient(c, e)
			defer cl.Close()
			warning, err := cl.Decommission(c.Context, addr)
			if err != nil {
				return fmt.Errorf("decommission %s: %w", addr, err)
			}
			if warning != "" {
				e.logger.Warn("decommission cannot finish yet", "minion", addr, "why", warning)
			}
			if !c.Bool("wait") {
				fmt.Fprintf(e.stdout, "decommissioning %s; 'dfs report' shows when it is safe to stop\n", addr)
				return nil
			}
			err = pollUntil(c.Context, time.Second, func() (bool, error) {
				r, err := cl.Report(c.Context)
				if err != nil {
					return false, err
				}
				if !slices.ContainsFunc(r.Minions, func(mn MinionInfo) bool { return mn.Addr == addr && mn.State == stateDecommissioned }) {
					return false, nil
				}
				fmt.Fprintf(e.stdout, "%s is decommissioned: safe to stop\n", addr)
				return true, nil
			})
			if err != nil {
				return fmt.Errorf("decommission %s: %w", addr, err)
			}
			return nil
		},
	}
}

// pollUntil calls done every interval until it reports true or an error,
// or ctx ends.
func pollUntil(ctx context.Context, every time.Duration, done func() (bool, error)) error {
	for {
		ok, err := done()
		if ok || err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(every):
		}
	}
}

// ---- output helpers ----

// jsonFile is the JSON form of a file in `stat --json` and `ls --json`.
type jsonFile struct {
	Path        string      `json:"path"`
	Type        string      `json:"type"`
	Size        int64       `json:"size"`
	Replication int         `json:"replication,omitempty"`
	BlockSize   int64       `json:"block_size,omitempty"`
	Modified    *time.Time  `json:"modified,omitempty"`
	Blocks      []jsonBlock `json:"blocks,omitempty"`
}

type jsonBlock struct {
	ID       string   `json:"id"`
	Size     int64    `json:"size"`
	CRC32C   string   `json:"crc32c"`
	Replicas []string `json:"replicas"`
}

func toJSON(fi FileInfo, withBlocks bool) jsonFile {
	j := jsonFile{Path: fi.Path, Type: "file", Size: fi.Size, Replication: fi.Replication, BlockSize: fi.BlockSize}
	if fi.Dir {
		j.Type = "dir"
	}
	if !fi.ModTime.IsZero() {
		t := fi.ModTime
		j.Modified = &t
	}
	if withBlocks && !fi.Dir {
		j.Blocks = []jsonBlock{}
		for _, b := range fi.Blocks {
			j.Blocks = append(j.Blocks, jsonBlock{ID: blockName(b.ID), Size: b.Size, CRC32C: fmt.Sprintf("%08x", b.CRC), Replicas: b.Replicas})
		}
	}
	return j
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// parseSize reads a byte count: plain bytes, or a number with a binary
// suffix K/KB/KiB, M/MB/MiB, G/GB/GiB (all powers of 1024, as HDFS reads
// "128m"), case-insensitive.
func parseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if rest, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q (want e.g. 64MiB, 512KiB or a number of bytes)", s)
	}
	return n * mult, nil
}

// sizeUnits are tried in order, longest suffix first.
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30},
	{"b", 1},
}

func humanSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

type jsonReport struct {
	ClusterID string       `json:"cluster_id"`
	SafeMode  bool         `json:"safe_mode"`
	Files     int          `json:"files"`
	Blocks    int          `json:"blocks"`
	Minions   []jsonMinion `json:"minions"`
	Masters   []jsonMaster `json:"masters,omitempty"`
}

type jsonMaster struct {
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Role    string `json:"role"`
	Term    uint64 `json:"term"`
	Commit  uint64 `json:"commit_index"`
	Applied uint64 `json:"applied_index"`
	Error   string `json:"error,omitempty"`
}

type jsonMinion struct {
	ID                   string  `json:"id"`
	Addr                 string  `json:"addr"`
	State                string  `json:"state"`
	Capacity             int64   `json:"capacity"`
	Used                 int64   `json:"used"`
	Free                 int64   `json:"free"`
	Blocks               int     `json:"blocks"`
	LastHeartbeatSeconds float64 `json:"last_heartbeat_seconds"`
}

func toJSONReport(r *ReportReply) jsonReport {
	j := jsonReport{ClusterID: r.ClusterID, SafeMode: r.SafeMode, Files: r.Files, Blocks: r.Blocks, Minions: []jsonMinion{}}
	for _, mn := range r.Minions {
		j.Minions = append(j.Minions, jsonMinion{ID: mn.ID, Addr: mn.Addr, State: mn.State, Capacity: mn.Capacity,
			Used: mn.Used, Free: mn.Free, Blocks: mn.Blocks, LastHeartbeatSeconds: mn.LastHeartbeat.Seconds()})
	}
	for _, mi := range r.Masters {
		j.Masters = append(j.Masters, jsonMaster{ID: mi.ID, Addr: mi.Addr, Role: mi.Role, Term: mi.Term, Commit: mi.Commit,
			Applied: mi.Applied, Error: mi.Err})
	}
	return j
}

type jsonFsck struct {
	SafeMode bool            `json:"safe_mode"`
	Files    int             `json:"files"`
	Healthy  bool            `json:"healthy"`
	Blocks   []jsonFsckBlock `json:"blocks"`
}

type jsonFsckBlock struct {
	Path     string   `json:"path"`
	Index    int      `json:"index"`
	ID       string   `json:"id"`
	Size     int64    `json:"size"`
	Status   string   `json:"status"`
	Expected int      `json:"expected_replicas"`
	Live     int      `json:"live_replicas"`
	Replicas []string `json:"replicas"`
	Corrupt  []string `json:"corrupt_replicas,omitempty"`
	Note     string   `json:"note,omitempty"`
}

func toJSONFsck(r *FsckReply) jsonFsck {
	j := jsonFsck{SafeMode: r.SafeMode, Files: r.Files, Healthy: true, Blocks: []jsonFsckBlock{}}
	for _, b := range r.Blocks {
		j.Healthy = j.Healthy && b.Status == statusHealthy
		j.Blocks = append(j.Blocks, jsonFsckBlock{Path: b.Path, Index: b.Index, ID: blockName(b.ID), Size: b.Size, Status: b.Status,
			Expected: b.Expected, Live: b.Live, Replicas: b.Replicas, Corrupt: b.Corrupt, Note: b.Note})
	}
	return j
}

func mountCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount the cluster at DIR (FUSE), in the foreground until Ctrl+C, SIGTERM or fusermount -u DIR",
		ArgsUsage: "DIR",
		Description: "Files are write-once, as in HDFS: a new file (or one opened with O_TRUNC) is written from start to end and\n" +
			"appears, or replaces the old one, when it is closed; a write elsewhere gets EOPNOTSUPP. Modification times are kept;\n" +
			"modes and owners are not (0644, 0755, the mount's user). Example: dfs mount /mnt/dfs & cp big.iso /mnt/dfs/isos/",
		Flags: []cli.Flag{
			masterFlag(),
			&cli.BoolFlag{Name: "read-only", Usage: "refuse every change"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let other users than the mount's use it (root, or user_allow_other in /etc/fuse.conf)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "mount takes DIR")
			}
			// Chunks come and go at the rate of the reads: collect
			// less often, but keep the heap under a bound (the mount's
			// RSS goal is 64 MiB).
			debug.SetGCPercent(400)
			debug.SetMemoryLimit(48 << 20)
			cl := newClient(c, e)
			defer cl.Close()
			return Mount(c.Context, cl, c.Args().First(), MountOptions{ReadOnly: c.Bool("read-only"), AllowOther: c.Bool("allow-other"), Logger: e.logger})
		},
	}
}
