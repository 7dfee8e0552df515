package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/gob"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/rpc"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	testSecret  = []byte("0123456789abcdef0123456789abcdef-test")
	otherSecret = []byte("fedcba9876543210fedcba9876543210-other")
)

// handshakeOver runs both sides of the handshake over a real loopback TCP
// connection and returns each side's error.
func handshakeOver(t *testing.T, dialer, listener *Security) (dialErr, acceptErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		conn, _, err := listener.accept(c, roleMaster, "")
		if err == nil {
			conn.Close()
		}
		done <- err
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn, dialErr := dialer.dial(raw, ln.Addr().String(), roleClient, handshakeTimeout)
	if dialErr == nil {
		conn.Close()
	}
	return dialErr, <-done
}

func TestHandshake(t *testing.T) {
	dir := t.TempDir()
	tlsServer, tlsClient := testTLS(t, dir)
	tests := []struct {
		name             string
		dialer, listener *Security
		refused          string // the reason the dialer shows; "" for success
		byPeer           bool
	}{
		{"NoSecretsOnLoopback", nil, nil, "", false},
		{"SameSecret", &Security{Secret: testSecret}, &Security{Secret: testSecret}, "", false},
		{"WrongSecret", &Security{Secret: otherSecret}, &Security{Secret: testSecret}, reasonWrongSecret, true},
		{"NoSecretGiven", nil, &Security{Secret: testSecret}, reasonNoSecret, true},
		{"ListenerWithoutSecret", &Security{Secret: testSecret}, nil, "it has no cluster secret", false},
		{"TLSSameSecret", &Security{Secret: testSecret, TLSClient: tlsClient}, &Security{Secret: testSecret, TLSServer: tlsServer}, "", false},
		{"TLSWrongSecret", &Security{Secret: otherSecret, TLSClient: tlsClient}, &Security{Secret: testSecret, TLSServer: tlsServer}, reasonWrongSecret, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dialErr, acceptErr := handshakeOver(t, tt.dialer, tt.listener)
			if tt.refused == "" {
				if dialErr != nil || acceptErr != nil {
					t.Fatalf("dial: %v; accept: %v", dialErr, acceptErr)
				}
				return
			}
			var re *RefusedError
			if !errors.As(dialErr, &re) || !strings.Contains(re.Reason, tt.refused) || re.ByPeer != tt.byPeer || re.Role != roleMaster {
				t.Fatalf("dial: %v (%#v); want a refusal by peer=%v saying %q", dialErr, re, tt.byPeer, tt.refused)
			}
			if tt.byPeer && !errors.Is(acceptErr, errRefused) {
				t.Errorf("accept: %v, want a refusal", acceptErr)
			}
			t.Logf("dialer: %v; listener: %v", dialErr, acceptErr)
		})
	}
	t.Run("TLSDialerPlainListener", func(t *testing.T) {
		dialErr, acceptErr := handshakeOver(t, &Security{Secret: testSecret, TLSClient: tlsClient}, &Security{Secret: testSecret})
		if dialErr == nil || acceptErr == nil {
			t.Fatalf("dial: %v; accept: %v; want both to fail", dialErr, acceptErr)
		}
	})
	t.Run("PlainDialerTLSListener", func(t *testing.T) {
		dialErr, acceptErr := handshakeOver(t, &Security{Secret: testSecret}, &Security{Secret: testSecret, TLSServer: tlsServer})
		if dialErr == nil || acceptErr == nil {
			t.Fatalf("dial: %v; accept: %v; want both to fail", dialErr, acceptErr)
		}
	})
}

// fakeRemote is a connection whose peer seems to be at addr.
type fakeRemote struct {
	net.Conn
	addr net.Addr
}

func (c fakeRemote) RemoteAddr() net.Addr { return c.addr }

// Without a secret, a listener turns away peers from other hosts unless it
// is --insecure; with a secret, where a peer comes from does not matter.
func TestHandshake_LoopbackOnlyWithoutSecret(t *testing.T) {
	remote := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 5555}
	tests := []struct {
		name     string
		dialer   *Security
		listener *Security
		refused  bool
	}{
		{"NoSecret", nil, nil, true},
		{"Insecure", nil, &Security{Insecure: true}, false},
		{"Secret", &Security{Secret: testSecret}, &Security{Secret: testSecret}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			done := make(chan error, 1)
			go func() {
				c, _, err := tt.listener.accept(fakeRemote{b, remote}, roleMinion, "")
				if err == nil {
					c.Close()
				}
				done <- err
			}()
			_, dialErr := tt.dialer.dial(a, "10.0.0.9:8888", roleClient, handshakeTimeout)
			acceptErr := <-done
			var re *RefusedError
			if tt.refused != (errors.As(dialErr, &re) && re.Reason == reasonLoopback) {
				t.Fatalf("dial: %v; accept: %v; refused want %v", dialErr, acceptErr, tt.refused)
			}
			if !tt.refused && (dialErr != nil || acceptErr != nil) {
				t.Fatalf("dial: %v; accept: %v", dialErr, acceptErr)
			}
		})
	}
}

// recorder is a connection that keeps a copy of what is written to it.
type recorder struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.out.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

// A recorded handshake is worth nothing on a new connection: the listener's
// nonce is fresh, so the replayed proof is wrong.
func TestHandshake_Replay(t *testing.T) {
	sec := &Security{Secret: testSecret}
	cl := startSecureCluster(t, 1, sec)
	addr := cl.Master.AddrString()
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Conn: raw}
	conn, err := sec.dial(rec, addr, roleClient, handshakeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	recorded := rec.out.Bytes()

	before := clusterState(t, cl)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write(recorded)
	// Whatever comes back, then the listener hangs up: the replay gets no
	// RPC. The last thing it says is the refusal.
	got, _ := io.ReadAll(c)
	if !bytes.HasSuffix(got, []byte(reasonWrongSecret)) {
		t.Fatalf("answer to a replayed handshake: %q, want a refusal", got)
	}
	if after := clusterState(t, cl); after != before {
		t.Errorf("state changed:\n%s\n---\n%s", before, after)
	}
}

// clusterState is every file of the cluster's master and minions, by path,
// size and content hash, and the namespace as ls -R shows it.
func clusterState(t *testing.T, cl *DevCluster) string {
	t.Helper()
	var lines []string
	filepath.WalkDir(cl.Dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "secret" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(cl.Dir, p)
		lines = append(lines, rel+" "+hashHex(b))
		return nil
	})
	sort.Strings(lines)
	c := newTestClient(t, cl)
	entries, err := c.List(t.Context(), "/", true)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	for _, e := range entries {
		lines = append(lines, "ns "+e.Path)
	}
	return strings.Join(lines, "\n")
}

func hashHex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:8])
}

// For each kind of connection in a cluster with a secret, a peer with no
// secret, a wrong one, or one that speaks garbage is refused and changes
// nothing: not the namespace, not a byte of the master's or the minions'
// directories.
func TestSecurity_StrangersChangeNothing(t *testing.T) {
	sec := &Security{Secret: testSecret}
	cl := startSecureCluster(t, 2, sec)
	good := newTestClient(t, cl)
	mustPut(t, good, "/f", randomBytes(t, 100<<10), PutOptions{Replication: 2})
	master := cl.Master.AddrString()
	minion := cl.MinionSet[0].advertised()
	before := clusterState(t, cl)

	strangers := []struct {
		name string
		sec  *Security
	}{{"NoSecret", nil}, {"WrongSecret", &Security{Secret: otherSecret}}}
	for _, s := range strangers {
		t.Run("ClientToMaster/"+s.name, func(t *testing.T) {
			c := NewClient(master)
			c.SetSecurity(s.sec)
			defer c.Close()
			for _, err := range []error{
				func() error { _, err := c.Remove(t.Context(), "/f", false); return err }(),
				c.Mkdir(t.Context(), "/d", true),
				func() error { _, err := c.Put(t.Context(), strings.NewReader("x"), "/g", PutOptions{}); return err }(),
			} {
				var re *RefusedError
				if !errors.As(err, &re) || !re.ByPeer {
					t.Fatalf("err = %v, want a refusal", err)
				}
			}
		})
		t.Run("ToMinion/"+s.name, func(t *testing.T) {
			p := newPool(s.sec, roleClient)
			defer p.close()
			var reply PipelineReply
			err := p.call(t.Context(), minion, minionService+".WriteBlock",
				&WriteBlockArgs{BlockID: 99, Data: []byte("x"), CRCs: checksums(nil, []byte("x")), Final: true}, &reply, 5*time.Second)
			var re *RefusedError
			if !errors.As(err, &re) || !re.ByPeer {
				t.Fatalf("WriteBlock: %v, want a refusal", err)
			}
			var rr ReadBlockReply
			if err := p.call(t.Context(), minion, minionService+".ReadBlock", &ReadBlockArgs{BlockID: 1, Length: 1}, &rr, 5*time.Second); !errors.As(err, &re) {
				t.Fatalf("ReadBlock: %v, want a refusal", err)
			}
		})
		t.Run("MinionToMaster/"+s.name, func(t *testing.T) {
			mn := NewMinion(t.TempDir(), "127.0.0.1:0", master)
			mn.Logger = testLogger(t)
			mn.Security = s.sec
			err := mn.Start()
			if err == nil {
				mn.Close()
				t.Fatal("a minion without the secret started")
			}
			var re *RefusedError
			if !errors.As(err, &re) {
				t.Fatalf("start: %v, want a refusal", err)
			}
		})
	}
	t.Run("Garbage", func(t *testing.T) {
		for _, addr := range []string{master, minion} {
			for _, junk := range [][]byte{
				[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
				{0xff, 0xfe, 0, 0, 1, 2, 3},
				append(append([]byte{}, handshakeMagic[:]...), make([]byte, 200)...),
			} {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(10 * time.Second))
				c.Write(junk)
				c.(*net.TCPConn).CloseWrite() // no more: the server need not wait for it
				io.Copy(io.Discard, c)        // until the server hangs up
				c.Close()
			}
		}
	})
	if after := clusterState(t, cl); after != before {
		t.Errorf("state changed:\n%s\n---\n%s", before, after)
	}

	// A minion of the cluster does not forward a block to a listener
	// that cannot prove it holds the secret.
	t.Run("MinionToMinion/Impostor", func(t *testing.T) {
		impostor := &Security{Secret: otherSecret}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					if conn, _, err := impostor.accept(c, roleMinion, ""); err == nil {
						io.Copy(io.Discard, conn) // would take the block
					}
				}()
			}
		}()
		p := newPool(sec, roleClient)
		defer p.close()
		var reply PipelineReply
		data := []byte("block for the impostor")
		// Even a pipeline the master had placed there (a token for it)
		// goes no further than the impostor's handshake.
		next := []string{ln.Addr().String()}
		token := issueToken(cl.Master.tokenKey, 98, append([]string{minion}, next...), time.Now())
		err = p.call(t.Context(), minion, minionService+".WriteBlock",
			&WriteBlockArgs{BlockID: 98, Data: data, CRCs: checksums(nil, data), Final: true, Next: next, Token: token}, &reply, 10*time.Second)
		if err != nil || reply.Failed != ln.Addr().String() || !strings.Contains(reply.Err, "cluster secret") {
			t.Fatalf("WriteBlock through an impostor: %v, %+v; want the impostor named, for its secret", err, reply)
		}
	})
}

// A peer that connects and says nothing, or says its hello a byte at a time,
// is dropped within the handshake's deadline and holds nothing after.
func TestServer_DropsSilentAndSlowPeers(t *testing.T) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", echoService{}); err != nil {
		t.Fatal(err)
	}
	s, err := serveRPC("127.0.0.1:0", srv, testLogger(t), &Security{Secret: testSecret}, roleMaster, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	start := time.Now()
	silent, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	slow, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	go func() {
		for _, b := range handshakeMagic {
			if _, err := slow.Write([]byte{b}); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	for _, c := range []net.Conn{silent, slow} {
		c.SetReadDeadline(time.Now().Add(3 * handshakeTimeout))
		if _, err := io.ReadAll(c); err != nil {
			t.Fatalf("the server did not hang up: %v", err)
		}
	}
	if d := time.Since(start); d > handshakeTimeout+2*time.Second {
		t.Errorf("dropped after %v, want about %v", d, handshakeTimeout)
	}
	waitFor(t, 5*time.Second, "the server to forget both connections", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 0 && len(s.perIP) == 0
	})
}

// Connections over the limit from one address are refused with a reason.
func TestServer_ConnectionLimit(t *testing.T) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", echoService{}); err != nil {
		t.Fatal(err)
	}
	s, err := serveRPC("127.0.0.1:0", srv, testLogger(t), nil, roleMaster, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.mu.Lock()
	s.maxPerIP = 2
	s.mu.Unlock()
	var pools []*pool
	defer func() {
		for _, p := range pools {
			p.close()
		}
	}()
	for i := range 3 {
		p := newPool(nil, roleClient)
		pools = append(pools, p)
		var r EchoReply
		err := p.call(t.Context(), s.Addr().String(), "Echo.Echo", &EchoArgs{N: i}, &r, 5*time.Second)
		var re *RefusedError
		if i < 2 && err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i == 2 && !(errors.As(err, &re) && re.Reason == reasonTooMany) {
			t.Fatalf("connection %d: %v, want %q", i, err, reasonTooMany)
		}
	}
}

// A body that claims 4 GiB is refused at its byte count: the server's heap
// does not grow and the connection is closed.
func TestServer_HostileBodySize(t *testing.T) {
	srv := rpc.NewServer()
	if err := srv.RegisterName("Echo", echoService{}); err != nil {
		t.Fatal(err)
	}
	s, err := serveRPC("127.0.0.1:0", srv, testLogger(t), nil, roleMaster, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	before := heap()
	raw, err := net.Dial("tcp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := (*Security)(nil).dial(raw, s.Addr().String(), roleClient, handshakeTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var hdr bytes.Buffer
	gob.NewEncoder(&hdr).Encode(&rpc.Request{ServiceMethod: "Echo.Echo", Seq: 1})
	// A gob message count of 4 GiB: 0xfc (4 bytes follow), then the count.
	msg := append(hdr.Bytes(), 0xfc, 0xff, 0xff, 0xff, 0xff)
	msg = append(msg, make([]byte, 64<<10)...)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write(msg)
	io.Copy(io.Discard, conn) // the server answers the error and hangs up
	if grew := int64(heap()) - int64(before); grew > 32<<20 {
		t.Errorf("heap grew by %d MiB after a body claiming 4 GiB", grew>>20)
	}
	waitFor(t, 5*time.Second, "the server to drop the connection", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.conns) == 0
	})
}

// The command line with a wrong secret: one line on stderr, exit 1.
func TestRun_WrongSecret(t *testing.T) {
	cl := startSecureCluster(t, 1, &Security{Secret: testSecret})
	dir := t.TempDir()
	wrong := filepath.Join(dir, "wrong")
	if err := writeSecretFile(wrong); err != nil {
		t.Fatal(err)
	}
	loose := filepath.Join(dir, "loose")
	os.WriteFile(loose, testSecret, 0o644)
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	addr := cl.Master.AddrString()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"Wrong", []string{"dfs", "ls", "--master", addr, "--secret-file", wrong}, "dfs: master " + addr + " refused: wrong cluster secret\n"},
		{"None", []string{"dfs", "ls", "--master", addr}, "dfs: master " + addr + " refused: " + reasonNoSecret + "\n"},
		{"Missing", []string{"dfs", "ls", "--master", addr, "--secret-file", filepath.Join(dir, "nope")}, "dfs: secret file: open " + filepath.Join(dir, "nope") + ": no such file or directory\n"},
		{"ReadableByOthers", []string{"dfs", "ls", "--master", addr, "--secret-file", loose}, "dfs: secret file " + loose + " may be read by others (mode 0644): chmod 600 " + loose + "\n"},
		{"TooShort", []string{"dfs", "ls", "--master", addr, "--secret-file", short}, "dfs: secret file " + short + " holds 3 bytes; want at least 32 (make one with: dfs secret new > FILE)\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(t.Context(), tt.args, strings.NewReader(""), &stdout, &stderr); code != 1 || stderr.String() != tt.want {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr.String(), tt.want)
			}
		})
	}
}

// dfs secret new writes a secret the processes take, mode 0600, to a file
// or to stdout.
func TestRun_SecretNew(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s")
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"dfs", "secret", "new", path}, nil, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("%v, %v; want mode 0600", st, err)
	}
	a, err := loadSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if code := run(t.Context(), []string{"dfs", "secret", "new", path}, nil, &stdout, &stderr); code != 1 {
		t.Errorf("secret new over an existing file: exit %d", code)
	}
	out, err := os.Create(filepath.Join(dir, "redirected"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	out.Chmod(0o644) // as a shell's redirect under umask 022 makes it
	if code := run(t.Context(), []string{"dfs", "secret", "new"}, nil, out, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := loadSecret(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) || len(a) != 64 {
		t.Errorf("secrets %q and %q: want two fresh ones of 64 hex digits", a, b)
	}
}

// testTLS makes a CA and a certificate for 127.0.0.1 signed by it, writes
// them as PEM files to dir, and returns the TLS configurations loadTLS makes
// of them.
func testTLS(t testing.TB, dir string) (server, client *tls.Config) {
	t.Helper()
	cert, key, ca := writeTestCerts(t, dir)
	server, client, err := loadTLS(cert, key, ca)
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

// writeTestCerts writes a CA and a leaf certificate (for 127.0.0.1 and
// localhost) with its key to dir and returns their paths.
func writeTestCerts(t testing.TB, dir string) (cert, key, ca string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "dfs test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "dfs node"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		KeyUsage:    x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	return write("node.pem", "CERTIFICATE", leafDER), write("node-key.pem", "PRIVATE KEY", keyDER), write("ca.pem", "CERTIFICATE", caDER)
}

// A whole cluster under TLS and a secret: puts and gets work, and a client
// without TLS gets a clear error.
func TestSecurity_TLSCluster(t *testing.T) {
	server, client := testTLS(t, t.TempDir())
	sec := &Security{Secret: testSecret, TLSServer: server, TLSClient: client}
	cl := startSecureCluster(t, 3, sec)
	c := newTestClient(t, cl)
	data := randomBytes(t, 3*testBlockSize+123)
	mustPut(t, c, "/tls", data, PutOptions{Replication: 3})
	mustGet(t, c, "/tls", data)
	// Blocks of several packets (in files of their own, not packed into
	// volumes) through TLS too.
	big := randomBytes(t, 3*packetSize+123)
	mustPut(t, c, "/tls-big", big, PutOptions{Replication: 3, BlockSize: 2 * packetSize})
	mustGet(t, c, "/tls-big", big)

	plain := NewClient(cl.Master.AddrString())
	plain.SetSecurity(&Security{Secret: testSecret})
	defer plain.Close()
	if _, err := plain.Stat(t.Context(), "/tls"); err == nil {
		t.Fatal("a client without TLS got an answer")
	} else {
		t.Logf("without TLS: %v", err)
	}
}

// A member that lies (it holds the secret, so it gets in) cannot make the
// master delete real replicas: not by registering under a real minion's id,
// not by heartbeating for one, not by claiming every block in its report,
// not by reporting real replicas corrupt.
func TestSecurity_LyingMinionDeletesNothing(t *testing.T) {
	sec := &Security{Secret: testSecret}
	cl := startSecureCluster(t, 3, sec)
	c := newTestClient(t, cl)
	files := map[string][]byte{}
	for i := range 4 {
		p := fmt.Sprintf("/f%d", i)
		files[p] = randomBytes(t, 2*testBlockSize+1000*i)
		mustPut(t, c, p, files[p], PutOptions{Replication: 3})
	}
	var claims []BlockReport
	for p := range files {
		fi, err := c.Stat(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range fi.Blocks {
			claims = append(claims, BlockReport{ID: b.ID, Size: b.Size})
		}
	}
	held := func() []int {
		var n []int
		for _, mn := range cl.MinionSet {
			n = append(n, len(mn.store.report()))
		}
		return n
	}
	before := held()

	liar := newPool(sec, roleMinion)
	defer liar.close()
	master := cl.Master.AddrString()
	real := cl.MinionSet[0]
	real.mu.Lock()
	realID := real.ident.MinionID
	real.mu.Unlock()
	call := func(method string, args, reply any) error {
		return liar.call(t.Context(), master, masterService+"."+method, args, reply, 5*time.Second)
	}

	// A real minion's identity, taken from another connection.
	var rr RegisterReply
	if err := call("Register", &RegisterArgs{MinionID: realID, Addr: "127.0.0.1:1", Blocks: claims}, &rr); !errors.Is(err, ErrIdentityTaken) {
		t.Fatalf("register under a live minion's id: %v, want %v", err, ErrIdentityTaken)
	}
	if err := call("Register", &RegisterArgs{MinionID: "MID-liar-2", Addr: real.advertised(), Blocks: claims}, &rr); !errors.Is(err, ErrIdentityTaken) {
		t.Fatalf("register at a live minion's address: %v, want %v", err, ErrIdentityTaken)
	}
	var hr HeartbeatReply
	if err := call("Heartbeat", &HeartbeatArgs{MinionID: realID, Addr: real.advertised()}, &hr); err != nil || !hr.Reregister || len(hr.Delete)+len(hr.Copy) > 0 {
		t.Fatalf("heartbeat for another minion: %+v, %v; want only Reregister", hr, err)
	}

	// A minion of its own that claims every block.
	liarAddr := closedPort(t)
	if err := call("Register", &RegisterArgs{MinionID: "MID-liar", Addr: liarAddr, Capacity: 1 << 40, Free: 1 << 40, Blocks: claims}, &rr); err != nil {
		t.Fatalf("register: %v", err)
	}
	// Real replicas reported corrupt by the liar.
	for _, b := range claims {
		for _, mn := range cl.MinionSet {
			if err := call("ReportBad", &ReportBadArgs{BlockID: b.ID, Addr: mn.advertised(), Reason: "lies"}, &Empty{}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Keep it live; the deletes it is handed are of its own claims.
	deleted := map[uint64]bool{}
	for i := 0; i < 40; i++ {
		var hr HeartbeatReply
		if err := call("Heartbeat", &HeartbeatArgs{MinionID: "MID-liar", Addr: liarAddr, Capacity: 1 << 40, Free: 1 << 40, NumBlocks: len(claims)}, &hr); err != nil {
			t.Fatal(err)
		}
		for _, id := range hr.Delete {
			deleted[id] = true
		}
		if len(deleted) == len(claims) {
			break
		}
		time.Sleep(testHeartbeat)
	}
	if len(deleted) != len(claims) {
		t.Errorf("the liar was asked to delete %d of its %d claimed blocks", len(deleted), len(claims))
	}
	// The real minions had time to act on any deletes of theirs.
	time.Sleep(5 * testHeartbeat)
	if after := held(); !slices.Equal(after, before) {
		t.Errorf("blocks on the real minions: %v before the liar, %v after", before, after)
	}
	for p, data := range files {
		mustGet(t, c, p, data)
		fi, err := c.Stat(t.Context(), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range fi.Blocks {
			if len(b.Replicas) != 3 || slices.Contains(b.Replicas, liarAddr) {
				t.Errorf("%s: block %x on %v, want the 3 real minions", p, b.ID, b.Replicas)
			}
		}
	}
}

// BenchmarkHandshake is the cost of opening one connection: TCP, then TLS
// if set, then the handshake. Calls on an open connection pay nothing more.
func BenchmarkHandshake(b *testing.B) {
	server, client := testTLS(b, b.TempDir())
	for _, bc := range []struct {
		name             string
		dialer, listener *Security
	}{
		{"NoSecret", nil, nil},
		{"Secret", &Security{Secret: testSecret}, &Security{Secret: testSecret}},
		{"SecretTLS", &Security{Secret: testSecret, TLSClient: client}, &Security{Secret: testSecret, TLSServer: server}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						if conn, _, err := bc.listener.accept(c, roleMaster, ""); err == nil {
							conn.Close()
						}
					}()
				}
			}()
			addr := ln.Addr().String()
			for b.Loop() {
				raw, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				conn, err := bc.dialer.dial(raw, addr, roleClient, handshakeTimeout)
				if err != nil {
					b.Fatal(err)
				}
				conn.Close()
			}
		})
	}
}
