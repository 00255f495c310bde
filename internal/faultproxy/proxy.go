// Package faultproxy is a TCP proxy for tests that breaks links on
// purpose. It listens on 127.0.0.1, forwards each connection to a target,
// and on demand cuts every link once a given number of bytes has gone
// down (from the target to the client), or at once, or flips one bit of a
// byte on its way down.
//
// Stall holds back what comes down without closing anything, as a link
// that has stopped carrying data one way.
//
// Positions count the bytes sent down over all connections since the
// proxy started (Down), so a test can aim a fault at "this far into what
// comes next".
package faultproxy

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Proxy forwards connections to a target and breaks them on demand.
type Proxy struct {
	t      testing.TB
	lis    net.Listener
	target string

	mu       sync.Mutex
	links    map[*link]bool
	down     int64   // bytes sent down so far
	cutAt    []int64 // cut every link when down reaches each, in order
	flipAt   int64   // flip a bit of the byte at this position; -1: none
	cuts     int
	accepted int           // connections accepted so far
	stall    chan struct{} // non-nil while bytes going down are held back; closed to release them
	wg       sync.WaitGroup
}

type link struct{ client, server net.Conn }

func (l *link) close() {
	_ = l.client.Close() // a test's proxy: the peers see the cut, which is the point
	_ = l.server.Close()
}

// New starts a proxy to target; the test's cleanup stops it.
func New(t testing.TB, target string) *Proxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("faultproxy: listen: %v", err)
	}
	p := &Proxy{t: t, lis: lis, target: target, links: map[*link]bool{}, flipAt: -1}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is the address to dial instead of the target's.
func (p *Proxy) Addr() string { return p.lis.Addr().String() }

// Down returns the bytes sent down so far.
func (p *Proxy) Down() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.down
}

// Accepted returns how many connections the proxy has taken so far.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Cuts returns how many times the links were cut.
func (p *Proxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

// CutAt cuts every link each time the bytes gone down in all reach one of
// the positions, which must ascend: the byte at a position and those
// after it on the link are not delivered. Each fires once.
func (p *Proxy) CutAt(pos ...int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutAt = pos
}

// FlipAt flips the lowest bit of the byte at pos on its way down, once.
func (p *Proxy) FlipAt(pos int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.flipAt = pos
}

// Stall holds back the bytes going down (from the target to the client)
// until Stall(false); the links stay open and bytes going up still flow.
func (p *Proxy) Stall(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.stall == nil:
		p.stall = make(chan struct{})
	case !on && p.stall != nil:
		close(p.stall)
		p.stall = nil
	}
}

// Cut closes every link now; new connections are forwarded as before.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutLocked()
}

func (p *Proxy) cutLocked() {
	for l := range p.links {
		l.close()
		delete(p.links, l)
	}
	p.cuts++
}

func (p *Proxy) close() {
	p.Stall(false)
	_ = p.lis.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp", p.target)
		if err != nil {
			p.t.Logf("faultproxy: dial %s: %v", p.target, err)
			_ = c.Close()
			continue
		}
		l := &link{client: c, server: s}
		p.mu.Lock()
		p.links[l] = true
		p.accepted++
		p.mu.Unlock()
		p.wg.Add(2)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(s, c) // ends when either side closes
			p.forget(l)
		}()
		go func() {
			defer p.wg.Done()
			p.forwardDown(l)
			p.forget(l)
		}()
	}
}

// forget closes a link that ended and drops it.
func (p *Proxy) forget(l *link) {
	l.close()
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.links, l)
}

// forwardDown copies the target's bytes to the client, applying faults.
func (p *Proxy) forwardDown(l *link) {
	buf := make([]byte, 32<<10)
	for {
		n, err := l.server.Read(buf)
		if n > 0 && !p.deliver(l, buf[:n]) {
			return
		}
		if err != nil {
			return
		}
	}
}

// deliver sends b down l unless a cut falls within it; it reports whether
// the link lives on. The write happens outside the lock, so a client
// that stops reading does not block Cut.
func (p *Proxy) deliver(l *link, b []byte) bool {
	p.mu.Lock()
	for p.stall != nil {
		stall := p.stall
		p.mu.Unlock()
		<-stall
		p.mu.Lock()
	}
	if !p.links[l] {
		p.mu.Unlock()
		return false
	}
	cut := false
	if len(p.cutAt) > 0 && p.down+int64(len(b)) >= p.cutAt[0] {
		b, cut = b[:max(0, p.cutAt[0]-p.down)], true
		p.cutAt = p.cutAt[1:]
	}
	if i := p.flipAt - p.down; p.flipAt >= 0 && i >= 0 && i < int64(len(b)) {
		b[i] ^= 1
		p.flipAt = -1
	}
	p.down += int64(len(b))
	p.mu.Unlock()
	if _, err := l.client.Write(b); err != nil {
		return false
	}
	if cut {
		p.Cut()
		return false
	}
	return true
}
