package mongotest

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
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
			go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
			_, _ = io.Copy(in, out)
			_ = in.Close()
		}()
	}
}
