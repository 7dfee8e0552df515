// auth.go opens every connection of the cluster. Under TLS (when it is set
// up) a handshake of its own runs first: each side proves that it holds the
// cluster secret without sending it, by an HMAC-SHA256 over a fresh nonce
// from each side with both roles (and, under TLS, the TLS session) bound in,
// so that a recorded handshake is worth nothing on another connection. Only
// then does a byte of RPC cross. Without a secret the handshake still runs,
// so each end knows where it stands, and a listener takes peers from
// loopback only unless it was started with --insecure.
package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// role is what a process is to its peer in a handshake.
type role byte

const (
	roleClient role = 'c'
	roleMinion role = 'n'
	roleMaster role = 'm'
)

func (r role) String() string {
	switch r {
	case roleClient:
		return "client"
	case roleMinion:
		return "minion"
	case roleMaster:
		return "master"
	}
	return fmt.Sprintf("role %q", byte(r))
}

// Security is how a process trusts its peers. The zero value has no secret
// and no TLS: its listeners take loopback peers only.
type Security struct {
	// Secret is the cluster secret; nil for none.
	Secret []byte
	// Insecure lets a listener without a secret take peers from any
	// address.
	Insecure bool
	// TLSServer and TLSClient, when set, wrap every listener's and every
	// dialer's connections in TLS before the handshake.
	TLSServer *tls.Config
	TLSClient *tls.Config
}

const (
	handshakeTimeout = 5 * time.Second // for the whole handshake, TLS included
	nonceSize        = 32
	proofSize        = sha256.Size
	// minSecretLen is the shortest secret taken, in bytes of the file.
	minSecretLen = 32
)

var handshakeMagic = [4]byte{'D', 'F', 'S', 1}

// The listener's status in its hello.
const (
	statusProof    = 0 // it holds a secret: its proof follows
	statusNoSecret = 1 // it holds none
	statusRefused  = 2 // it will not talk to this peer: a reason follows
)

// Reasons a listener gives, and the dialer shows.
const (
	reasonWrongSecret = "wrong cluster secret"
	reasonNoSecret    = "no cluster secret given (use --secret-file or DFS_SECRET_FILE)"
	reasonLoopback    = "this cluster has no secret and takes peers from loopback only (give it --secret-file, or --insecure)"
	reasonTooMany     = "too many connections"
)

// RefusedError is a peer that would not let this process in, or that this
// process would not trust. Its text is the whole story, so main prints it
// without the operation around it.
type RefusedError struct {
	Role   role // what the peer said it is; 0 if it never said
	Addr   string
	Reason string
	// ByPeer is set when the peer refused; else this side refused it.
	ByPeer bool
}

func (e *RefusedError) Error() string {
	who := "peer"
	if e.Role != 0 {
		who = e.Role.String()
	}
	if e.ByPeer {
		return fmt.Sprintf("%s %s refused: %s", who, e.Addr, e.Reason)
	}
	return fmt.Sprintf("%s %s is not trusted: %s", who, e.Addr, e.Reason)
}

// peer is the other end of an accepted connection, as the handshake
// established it.
type peer struct {
	addr   string // host:port it connected from
	role   role
	closed atomic.Bool // the connection is over
}

// gone reports whether p's connection has ended. A nil peer is a caller in
// this process (tests), which is there for as long as it calls.
func (p *peer) gone() bool { return p != nil && p.closed.Load() }

// proof is one side's HMAC over everything the handshake agreed on.
func proof(secret []byte, label string, dialer, listener role, nonceD, nonceL, binding []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte("dfs handshake v1 " + label))
	h.Write([]byte{byte(dialer), byte(listener)})
	h.Write(nonceD)
	h.Write(nonceL)
	h.Write(binding)
	return h.Sum(nil)
}

// tlsBinding is the TLS session's exported keying material, if conn is
// TLS: a proof made inside one TLS session is worthless in another, so a
// man in the middle who terminates TLS cannot relay the handshake.
func tlsBinding(conn net.Conn) ([]byte, error) {
	tc, ok := conn.(*tls.Conn)
	if !ok {
		return nil, nil
	}
	st := tc.ConnectionState()
	return st.ExportKeyingMaterial("EXPORTER-dfs-handshake", nil, 32)
}

// dial opens the handshake on conn, a fresh connection to addr, as a process
// of role self, and gives it at most limit. It returns the connection to use
// (the TLS one under TLS). On any error conn is closed.
func (s *Security) dial(conn net.Conn, addr string, self role, limit time.Duration) (_ net.Conn, err error) {
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	conn.SetDeadline(time.Now().Add(limit))
	if s != nil && s.TLSClient != nil {
		cfg := s.TLSClient.Clone()
		if cfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			cfg.ServerName = host
		}
		tc := tls.Client(conn, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		conn = tc
	}
	var secret []byte
	if s != nil {
		secret = s.Secret
	}
	hello := make([]byte, 0, 6+nonceSize)
	hello = append(hello, handshakeMagic[:]...)
	hello = append(hello, byte(self), 0)
	nonceD := make([]byte, nonceSize)
	rand.Read(nonceD)
	hello = append(hello, nonceD...)
	if _, err := conn.Write(hello); err != nil {
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}

	short := func(err error) error {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("handshake with %s: the peer hung up (is it a dfs process of this version?)", addr)
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("handshake with %s: no answer within %v (is it a dfs process?)", addr, limit)
		}
		return fmt.Errorf("handshake with %s: %w", addr, err)
	}
	var head [6]byte
	if _, err := io.ReadFull(conn, head[:]); err != nil {
		return nil, short(err)
	}
	if [4]byte(head[:4]) != handshakeMagic {
		return nil, fmt.Errorf("handshake with %s: not a dfs process of this version", addr)
	}
	peerRole, status := role(head[4]), head[5]
	if peerRole != roleMaster && peerRole != roleMinion {
		return nil, fmt.Errorf("handshake with %s: the peer is a %v, not a server", addr, peerRole)
	}
	switch status {
	case statusRefused:
		reason, err := readReason(conn)
		if err != nil {
			return nil, short(err)
		}
		return nil, &RefusedError{Role: peerRole, Addr: addr, Reason: reason, ByPeer: true}
	case statusProof, statusNoSecret:
	default:
		return nil, fmt.Errorf("handshake with %s: unknown status %d", addr, status)
	}
	nonceL := make([]byte, nonceSize)
	if _, err := io.ReadFull(conn, nonceL); err != nil {
		return nil, short(err)
	}
	binding, err := tlsBinding(conn)
	if err != nil {
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	mine := make([]byte, proofSize)
	if secret != nil {
		mine = proof(secret, "dialer", self, peerRole, nonceD, nonceL, binding)
	}
	if status == statusProof {
		theirs := make([]byte, proofSize)
		if _, err := io.ReadFull(conn, theirs); err != nil {
			return nil, short(err)
		}
		if secret != nil && !hmac.Equal(theirs, proof(secret, "listener", self, peerRole, nonceD, nonceL, binding)) {
			// Send ours anyway, so that its log names us; it proves
			// nothing on any other connection.
			conn.Write(mine)
			if reason, err := readVerdict(conn); err == nil && reason != "" {
				return nil, &RefusedError{Role: peerRole, Addr: addr, Reason: reason, ByPeer: true}
			}
			return nil, &RefusedError{Role: peerRole, Addr: addr, Reason: "it does not hold our cluster secret"}
		}
	} else if secret != nil {
		return nil, &RefusedError{Role: peerRole, Addr: addr, Reason: "it has no cluster secret, and this process has one"}
	}
	if _, err := conn.Write(mine); err != nil {
		return nil, short(err)
	}
	reason, err := readVerdict(conn)
	if err != nil {
		return nil, short(err)
	}
	if reason != "" {
		return nil, &RefusedError{Role: peerRole, Addr: addr, Reason: reason, ByPeer: true}
	}
	conn.SetDeadline(time.Time{})
	return conn, nil
}

// readReason reads a refusal's text: a length byte, then that many bytes.
func readReason(r io.Reader) (string, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return "", err
	}
	b := make([]byte, n[0])
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return strings.ToValidUTF8(string(b), "?"), nil
}

// readVerdict reads the listener's last word: "" when it lets us in.
func readVerdict(r io.Reader) (string, error) {
	var v [1]byte
	if _, err := io.ReadFull(r, v[:]); err != nil {
		return "", err
	}
	if v[0] == 0 {
		return "", nil
	}
	return readReason(r)
}

func appendReason(b []byte, reason string) []byte {
	if len(reason) > 255 {
		reason = reason[:255]
	}
	return append(append(b, byte(len(reason))), reason...)
}

// errRefused is what accept returns for a peer it refused; the reason went
// to the peer and to the log.
var errRefused = errors.New("refused")

// accept runs the listener's side of the handshake on conn as a process of
// role self. refuse, if not empty, is a reason to turn the peer away
// whatever it says (too many connections). It returns the connection to use
// and who the peer is; on any error conn is closed.
func (s *Security) accept(conn net.Conn, self role, refuse string) (_ net.Conn, _ *peer, err error) {
	defer func() {
		if err != nil {
			conn.Close()
		}
	}()
	p := &peer{addr: conn.RemoteAddr().String()}
	conn.SetDeadline(time.Now().Add(handshakeTimeout))
	if s != nil && s.TLSServer != nil {
		tc := tls.Server(conn, s.TLSServer)
		if err := tc.Handshake(); err != nil {
			return nil, p, fmt.Errorf("TLS handshake: %w", err)
		}
		conn = tc
	}
	var hello [6 + nonceSize]byte
	if _, err := io.ReadFull(conn, hello[:]); err != nil {
		return nil, p, fmt.Errorf("reading its hello: %w", err)
	}
	if [4]byte(hello[:4]) != handshakeMagic {
		return nil, p, errors.New("not a dfs handshake")
	}
	p.role = role(hello[4])
	if p.role != roleClient && p.role != roleMinion && p.role != roleMaster {
		return nil, p, fmt.Errorf("unknown role %d", hello[4])
	}
	nonceD := hello[6:]
	var secret []byte
	if s != nil {
		secret = s.Secret
	}
	if refuse == "" && secret == nil && !(s != nil && s.Insecure) && !isLoopback(conn.RemoteAddr()) {
		refuse = reasonLoopback
	}
	reply := append(make([]byte, 0, 6+nonceSize+proofSize), handshakeMagic[:]...)
	reply = append(reply, byte(self))
	if refuse != "" {
		conn.Write(appendReason(append(reply, statusRefused), refuse))
		return nil, p, fmt.Errorf("%w: %s", errRefused, refuse)
	}
	nonceL := make([]byte, nonceSize)
	rand.Read(nonceL)
	binding, err := tlsBinding(conn)
	if err != nil {
		return nil, p, err
	}
	if secret != nil {
		reply = append(reply, statusProof)
		reply = append(reply, nonceL...)
		reply = append(reply, proof(secret, "listener", p.role, self, nonceD, nonceL, binding)...)
	} else {
		reply = append(append(reply, statusNoSecret), nonceL...)
	}
	if _, err := conn.Write(reply); err != nil {
		return nil, p, err
	}
	theirs := make([]byte, proofSize)
	if _, err := io.ReadFull(conn, theirs); err != nil {
		return nil, p, fmt.Errorf("reading its proof: %w", err)
	}
	if secret != nil && !hmac.Equal(theirs, proof(secret, "dialer", p.role, self, nonceD, nonceL, binding)) {
		reason := reasonWrongSecret
		if allZero(theirs) {
			reason = reasonNoSecret
		}
		conn.Write(appendReason([]byte{1}, reason))
		return nil, p, fmt.Errorf("%w: %s", errRefused, reason)
	}
	if _, err := conn.Write([]byte{0}); err != nil {
		return nil, p, err
	}
	conn.SetDeadline(time.Time{})
	return conn, p, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func isLoopback(a net.Addr) bool {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.IsLoopback()
	}
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// describe says at start-up how a listener of this security takes peers.
func (s *Security) describe(logger *slog.Logger, what, addr string) {
	switch {
	case s != nil && s.Secret != nil:
		tlsOn := s.TLSServer != nil
		logger.Info(what+" takes peers that hold the cluster secret", "addr", addr, "tls", tlsOn)
	case s != nil && s.Insecure:
		logger.Warn(what+" takes peers from anywhere without a secret (--insecure): anyone who reaches "+addr+" can read, change and delete everything", "addr", addr)
	default:
		logger.Info(what+" has no cluster secret and takes peers from loopback only; give --secret-file (dfs secret new) or --insecure to serve other hosts", "addr", addr)
	}
}

// ---- the secret ----

// newSecret is a fresh random secret, as `dfs secret new` writes it: 32
// random bytes in hex.
func newSecret() string {
	b := make([]byte, 32)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// loadSecret reads a secret file: its bytes, without surrounding white
// space, are the key. A file others may read is refused, as ssh refuses a
// private key that others may read.
func loadSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("secret file %s is not a regular file", path)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret file %s may be read by others (mode %04o): chmod 600 %s", path, st.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return nil, fmt.Errorf("secret file %s: %w", path, err)
	}
	if len(b) > 4096 {
		return nil, fmt.Errorf("secret file %s is longer than 4096 bytes", path)
	}
	s := strings.TrimSpace(string(b))
	if len(s) < minSecretLen {
		return nil, fmt.Errorf("secret file %s holds %d bytes; want at least %d (make one with: dfs secret new > FILE)", path, len(s), minSecretLen)
	}
	return []byte(s), nil
}

// writeSecretFile creates path, which must not exist, with a fresh secret
// and mode 0600.
func writeSecretFile(path string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.WriteString(newSecret() + "\n"); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadTLS builds the TLS configurations of a process from PEM files: its
// certificate and key (for its listener, and shown to the listeners it
// dials) and the CA that signed its peers' certificates (the system's roots
// when empty).
func loadTLS(certFile, keyFile, caFile string) (server, client *tls.Config, err error) {
	if certFile == "" && keyFile == "" && caFile == "" {
		return nil, nil, nil
	}
	client = &tls.Config{MinVersion: tls.VersionTLS13}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("--tls-ca: no PEM certificate in %s", caFile)
		}
		client.RootCAs = pool
	}
	if (certFile == "") != (keyFile == "") {
		return nil, nil, errors.New("--tls-cert and --tls-key go together")
	}
	if certFile == "" {
		return nil, client, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert, --tls-key: %w", err)
	}
	client.Certificates = []tls.Certificate{cert}
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if client.RootCAs != nil {
		server.ClientCAs = client.RootCAs
		server.ClientAuth = tls.VerifyClientCertIfGiven
	}
	return server, client, nil
}

// ---- refusal logs ----

// refusalLog logs refused peers, at most a few lines a second, so that a
// flood of garbage cannot flood the log too.
type refusalLog struct {
	mu         sync.Mutex
	window     time.Time
	n          int
	suppressed int
}

const refusalLogsPerSecond = 10

func (l *refusalLog) log(logger *slog.Logger, peer string, err error) {
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.window) >= time.Second {
		if l.suppressed > 0 {
			logger.Warn("refused peers not logged", "count", l.suppressed)
		}
		l.window, l.n, l.suppressed = now, 0, 0
	}
	l.n++
	if l.n > refusalLogsPerSecond {
		l.suppressed++
		l.mu.Unlock()
		return
	}
	l.mu.Unlock()
	logger.Warn("refused a connection", "peer", peer, "reason", err)
}
