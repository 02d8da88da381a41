package mongotest

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"slices"
	"sync"
	"testing"
	"time"

	"go.mongodb.org/mongo-driver/v2/bson"
)

// Proxy forwards loopback TCP to the store and can cut it off, as a network
// partition or a paused server would: Pause closes every connection and
// refuses new ones until Resume. FailCommand cuts one command before or after
// it runs; HoldCommand keeps one back and delivers it late, after its sender
// gave up.
type Proxy struct {
	ln     net.Listener
	target string

	mu     sync.Mutex
	paused bool
	conns  map[net.Conn]bool

	// Fault injection: data commands seen so far, their bodies, and the
	// fault to inject.
	seen   []string
	bodies []bson.Raw
	fault  *fault
	// latency delays every data command, as a slow network or an
	// overloaded server would.
	latency time.Duration
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
	held *Held // when set, the command is held back instead of cut
}

// Held is a command the proxy kept instead of forwarding, as a network that
// stalls a packet would: the client waits for a reply that never comes and
// gives up; Deliver later hands the command to the store after all.
type Held struct {
	p       *Proxy
	arrived chan struct{}
	// Command is "name collection" of the held command, once it arrived.
	Command string
	msg     []byte
}

// Arrived is closed when the held command reached the proxy.
func (h *Held) Arrived() <-chan struct{} { return h.arrived }

// Deliver sends the held command to the store on a connection of its own
// and returns the store's reply, as a late packet would be run by the store
// after its sender stopped listening.
func (h *Held) Deliver(ctx context.Context) (bson.Raw, error) {
	select {
	case <-h.arrived:
	default:
		return nil, errors.New("mongotest: held command never arrived")
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", h.p.target)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	if _, err := c.Write(h.msg); err != nil {
		return nil, err
	}
	reply, err := readMessage(c)
	if err != nil {
		return nil, err
	}
	if len(reply) < 21 {
		return nil, fmt.Errorf("mongotest: short reply to held %s", h.Command)
	}
	return bson.Raw(reply[21:]), nil
}

// HoldCommand makes the n-th data command from now be held back, once, until
// the returned Held is delivered.
func (p *Proxy) HoldCommand(n int) *Held {
	p.mu.Lock()
	defer p.mu.Unlock()
	h := &Held{p: p, arrived: make(chan struct{})}
	p.seen, p.bodies = nil, nil
	p.fault = &fault{n: n, held: h}
	return h
}

// dataCommands are the commands that read or write documents; handshakes,
// heartbeats and session chatter are not counted.
var dataCommands = []string{"find", "getMore", "insert", "update", "delete", "findAndModify", "aggregate", "count", "distinct", "createIndexes", "listIndexes"}

// SetLatency delays every data command by d before it reaches the store
// (handshakes and heartbeats are not delayed, so the client still sees the
// server up).
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.latency = d
}

// FailCommand makes the n-th data command from now fail as when says, once.
func (p *Proxy) FailCommand(n int, when Fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen, p.bodies = nil, nil
	p.fault = &fault{n: n, when: when}
}

// Commands returns the data commands seen since the last FailCommand or
// ResetCommands, as "name collection".
func (p *Proxy) Commands() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.seen)
}

// CommandBodies returns the command documents (without OP_MSG document
// sequences) of the data commands seen, in the order of Commands.
func (p *Proxy) CommandBodies() []bson.Raw {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.bodies)
}

// ResetCommands forgets the commands seen and any pending fault.
func (p *Proxy) ResetCommands() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen, p.bodies, p.fault = nil, nil, nil
}

// inspect records a client message and says whether to cut before it, cut
// when its reply comes back, or hold it, and how long to delay it.
func (p *Proxy) inspect(msg []byte) (cutBefore, cutAfter, hold bool, delay time.Duration) {
	name, coll, body := command(msg)
	if !slices.Contains(dataCommands, name) {
		return false, false, false, 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append(p.seen, name+" "+coll)
	p.bodies = append(p.bodies, body)
	delay = p.latency
	if p.fault == nil || len(p.seen) != p.fault.n {
		return false, false, false, delay
	}
	f := p.fault
	p.fault = nil
	if f.held != nil {
		f.held.Command = name + " " + coll
		f.held.msg = slices.Clone(msg)
		close(f.held.arrived)
		return false, false, true, 0
	}
	return f.when == Before, f.when == After, false, delay
}

// command reads the command name, its collection and its body from an OP_MSG.
func command(msg []byte) (name, coll string, body bson.Raw) {
	const opMsg = 2013
	if len(msg) < 21 || binary.LittleEndian.Uint32(msg[12:]) != opMsg || msg[20] != 0 {
		return "", "", nil
	}
	doc := bson.Raw(msg[21:])
	if len(doc) < 4 || int(binary.LittleEndian.Uint32(doc)) > len(doc) {
		return "", "", nil
	}
	doc = doc[:binary.LittleEndian.Uint32(doc)]
	first, err := doc.IndexErr(0)
	if err != nil {
		return "", "", nil
	}
	coll, _ = first.Value().StringValueOK()
	return first.Key(), coll, slices.Clone(doc)
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
					before, after, hold, delay := p.inspect(msg)
					if before {
						return
					}
					if delay > 0 {
						time.Sleep(delay) // the simulated latency itself
					}
					if hold {
						// The client waits for a reply that never comes.
						continue
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
