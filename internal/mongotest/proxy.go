package mongotest

import (
	"encoding/binary"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Proxy forwards loopback TCP to the store and can cut it off, as a network
// partition or a paused server would: Pause closes every connection and
// refuses new ones until Resume.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]bool

	// Fault injection: data commands seen so far, and the fault to inject.
	seen  []string
	fault *fault
}

// Fault says when an injected failure cuts the connection: Before the
// command reaches the store (it never runs), or After the store ran it but
// before its reply reaches the client (it ran; the client sees an error).
type Fault int

const (
	Before Fault = iota + 1
	After
)

func (f Fault) String() string { return map[Fault]string{Before: "before", After: "after"}[f] }

type fault struct {
	n    int // 1-based index among data commands
	when Fault
}

// dataCommands are the commands that read or write documents; handshakes,
// heartbeats and session chatter are not counted.
var dataCommands = []string{"find", "getMore", "insert", "update", "delete", "findAndModify", "aggregate", "count", "distinct", "createIndexes", "listIndexes"}

// FailCommand makes the n-th data command from now fail as when says, once.
func (p *Proxy) FailCommand(n int, when Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = nil
	p.fault = &fault{n: n, when: when}
}

// Commands returns the data commands seen since the last FailCommand or
// ResetCommands, as "name collection".
func (p *Proxy) Commands() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

// ResetCommands forgets the commands seen and any pending fault.
func (p *Proxy) ResetCommands() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen, p.fault = nil, nil
}

// inspect records a client message and says whether to cut before it, or
// cut when its reply comes back.
func (p *Proxy) inspect(msg []byte) (cutBefore, cutAfter bool) {
	name, coll := command(msg)
	if !slices.Contains(dataCommands, name) {
		return false, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, name+" "+coll)
	if p.fault == nil || len(p.seen) != p.fault.n {
		return false, false
	}
	when := p.fault.when
	p.fault = nil
	return when == Before, when == After
}

// command reads the command name and its collection from an OP_MSG.
func command(msg []byte) (name, coll string) {
	const opMsg = 2013
	if len(msg) < 21 || binary.LittleEndian.Uint32(msg[12:]) != opMsg || msg[20] != 0 {
		return "", ""
	}
	doc := bson.Raw(msg[21:])
	if len(doc) < 4 || int(binary.LittleEndian.Uint32(doc)) > len(doc) {
		return "", ""
	}
	doc = doc[:binary.LittleEndian.Uint32(doc)]
	first, err := doc.IndexErr(0)
	if err != nil {
		return "", ""
	}
	coll, _ = first.Value().StringValueOK()
	return first.Key(), coll
}

// readMessage reads one wire-protocol message.
func readMessage(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.LittleEndian.Uint32(hdr[:]))
	if n < 16 || n > 64<<20 {
		return nil, io.ErrUnexpectedEOF
	}
	msg := make([]byte, n)
	copy(msg, hdr[:])
	_, err := io.ReadFull(r, msg[4:])
	return msg, err
}

// Proxy starts a proxy in front of the test's server; it stops with the test.
func (d *DB) Proxy(tb testing.TB) *Proxy {
	tb.Helper()
	u, err := url.Parse(d.URI)
	if err != nil {
		tb.Fatalf("mongotest: proxy: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("mongotest: proxy: %v", err)
	}
	p := &Proxy{ln: ln, target: u.Host, conns: map[net.Conn]bool{}}
	go p.serve()
	tb.Cleanup(func() {
		_ = ln.Close()
		p.Pause()
	})
	return p
}

// URI connects through the proxy.
func (p *Proxy) URI() string {
	return "mongodb://" + p.ln.Addr().String() + "/?directConnection=true"
}

// Pause drops every connection and refuses new ones.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
}

// Resume lets connections through again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = false
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.paused {
		return false
	}
	for _, c := range cs {
		p.conns[c] = true
	}
	return true
}

func (p *Proxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			out, err := net.Dial("tcp", p.target)
			if err != nil || !p.track(in, out) {
				_ = in.Close()
				if out != nil {
					_ = out.Close()
				}
				return
			}
			cut := func() { _ = in.Close(); _ = out.Close() }
			var dropMu sync.Mutex
			drop := map[uint32]bool{} // request ids whose replies cut the connection
			go func() {
				defer cut()
				for {
					msg, err := readMessage(in)
					if err != nil {
						return
					}
					before, after := p.inspect(msg)
					if before {
						return
					}
					if after {
						dropMu.Lock()
						drop[binary.LittleEndian.Uint32(msg[4:])] = true
						dropMu.Unlock()
					}
					if _, err := out.Write(msg); err != nil {
						return
					}
				}
			}()
			defer cut()
			for {
				msg, err := readMessage(out)
				if err != nil {
					return
				}
				dropMu.Lock()
				cutNow := drop[binary.LittleEndian.Uint32(msg[8:])]
				dropMu.Unlock()
				if cutNow {
					return
				}
				if _, err := in.Write(msg); err != nil {
					return
				}
			}
		}()
	}
}
