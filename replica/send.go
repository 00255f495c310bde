package replica

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/logging"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Mode is a sync mode: what a commit waits for from the standbys (SPEC 6).
type Mode int8

// The sync modes, weakest first.
const (
	Async Mode = iota
	ReceivedAck
	AppliedAck
)

var modeNames = []string{"async", "received-ack", "applied-ack"}

func (m Mode) String() string {
	if m < 0 || int(m) >= len(modeNames) {
		return fmt.Sprintf("mode(%d)", m)
	}
	return modeNames[m]
}

// ParseMode returns the sync mode a config or request names.
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("replica: unknown sync mode %q (async, received-ack or applied-ack)", s)
}

// Peer is another node.
type Peer struct {
	Name string
	Addr string
}

// The states of a standby, as its primary sees it (StandbyStatus.State).
const (
	StateConnecting   = "connecting"
	StateStreaming    = "streaming"
	StateCatchingUp   = "catching-up"
	StateDisconnected = "disconnected"
	StateNeedsImage   = "needs-image"
	StateRefused      = "refused"
	StateDegraded     = "degraded"
)

// SenderOptions configure a Sender.
type SenderOptions struct {
	Node string // this node's name
	Addr string // where clients reach this node
	// Epochs is the node's history; the Sender ships at the epoch it
	// has when the Sender starts, and calls OnNewerEpoch (if set) when a
	// standby is at a newer one: another node was promoted, and this one
	// must step down.
	Epochs       *Epochs
	OnNewerEpoch func(epoch uint64, standby string)
	Peers        []Peer // the standbys to ship to at first (SetPeers changes them)
	// Mode is what a commit waits for (Wait), Quorum how many standbys
	// must answer, and Timeout how long a commit waits for them before it
	// degrades (Block false) or goes on waiting until its deadline.
	Mode    Mode
	Quorum  int
	Timeout time.Duration
	Block   bool
	// Counted, when not empty, names the standbys whose acknowledgements
	// count towards Quorum (sync_standbys); the others are shipped to
	// and listed in the status but never complete a commit's quorum.
	Counted []string
	// Relay, when set, makes this a propagator's Sender: it relays the
	// log it takes from upstream, and ships to no peer of that name.
	Relay *Relay
	// OnAck, when set, is called after a standby's acknowledgements
	// advance (a propagator passes them upstream).
	OnAck func()
	// MaxMessageBytes bounds a message; zero means 4 MiB.
	MaxMessageBytes int
	// Dial connects to a peer; nil means Dial.
	Dial   func(addr string) (*grpc.ClientConn, error)
	Logger hclog.Logger
}

// Relay says whose log a propagator relays.
type Relay struct {
	Primary  Peer     // the primary whose log it is
	Via      []string // the relays the log came through before this node, the primary's first
	Upstream string   // the node this one follows
}

// maxDownstream bounds the standbys a propagator may report behind it.
const maxDownstream = 64

// Sender ships a primary's log to its standbys: one link per standby,
// each a Ship stream that it opens and opens again when it breaks. A
// link starts after the standby's applied LSN and sends the records the
// store's ring holds, in batches, once they meet the node's durability
// level (durability.Store.Shippable), so a standby never holds a commit
// its primary could lose in a crash its level survives. A standby the
// ring no longer reaches back far enough for needs an image: the link
// says so in its state and tries again now and then.
//
// Memory is bounded on both sides: the sender reads from the ring, whose
// size is fixed, and a batch at a time; gRPC flow control stops a Send
// while the standby does not keep up.
type Sender struct {
	opts  SenderOptions
	store *durability.Store
	ctx   context.Context // ends with Close; each link's context is a child
	// Set by Start, before the first link opens.
	epoch uint64
	last  EpochStart // the newest stretch of the history it ships under
	hist  []*pb.EpochStart
	hello *pb.ShipHello // the hello's fixed part: who this node is, and whose log it ships

	mu       sync.Mutex
	links    []*link      // one per standby shipped to, in the order they were added
	waiters  []*ackWaiter // the commits waiting in Wait, each woken alone once its LSN is held
	degraded bool         // commits return without their quorum (on_sync_timeout = degrade)
	resumeAt uint64       // while degraded: the LSN the quorum must reach (the last LSN when it was set)
	resumeBy time.Time    // when resumeAt was set
	// resumeIn is the sync mode whose wait timed out, the degradation's:
	// the quorum must catch up under it (a standby that receives at once
	// but applies late has not caught up for applied-ack commits).
	resumeIn Mode
	closed   bool // Close was called: commits wait no more
	// The oldest wait for the quorum still unanswered, as far as Wait
	// knows: a commit began to wait for lateLSN under lateMode at
	// lateSince (zero: none). Its caller may have left (a deadline
	// shorter than sync_timeout); the quorum has not answered in time all
	// the same.
	lateLSN   uint64
	lateMode  Mode
	lateSince time.Time

	cancel context.CancelFunc
	done   sync.WaitGroup
}

// link is one standby; its fields after done are guarded by Sender.mu.
type link struct {
	peer     Peer
	stop     context.CancelFunc // ends the link (SetPeers)
	done     chan struct{}      // closed when its goroutine has returned
	state    string
	reason   string // why it is not streaming
	received uint64
	applied  uint64
	sent     uint64
	backlog  uint64    // the sender's last LSN when the link opened: until it is applied, the standby catches up
	opened   int       // links opened so far
	openedAt time.Time // when the link last opened
	down     []Standby // when the standby is a propagator: its standbys, as it last reported them
}

// NewSender makes a Sender of store's log to opts.Peers, which ships
// once started (Start); Close stops it, started or not. All that can go
// wrong goes wrong here, not in Start: a promotion makes its Sender
// before it keeps its new epoch, and starts it after.
func NewSender(store *durability.Store, opts SenderOptions) (*Sender, error) {
	if store.Ring() == nil {
		return nil, errors.New("replica: the store keeps no ring of records to ship")
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 4 << 20
	}
	if opts.Dial == nil {
		opts.Dial = func(addr string) (*grpc.ClientConn, error) { return Dial(addr) }
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Epochs == nil {
		return nil, errors.New("replica: a Sender needs the node's epoch history")
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Sender{opts: opts, store: store, ctx: ctx, cancel: cancel}, nil
}

// Start starts shipping, at the epoch the history has now, to the peers
// the options name; it is called once, before any other method but
// Close.
func (s *Sender) Start() {
	hist := s.opts.Epochs.History()
	s.epoch, s.last, s.hist = hist[len(hist)-1].Epoch, hist[len(hist)-1], epochsToPB(hist)
	s.hello = &pb.ShipHello{Node: s.opts.Node, Addr: s.opts.Addr, Epoch: s.epoch, Epochs: s.hist}
	if r := s.opts.Relay; r != nil {
		s.hello.Via = append(slices.Clone(r.Via), s.opts.Node)
		s.hello.Primary, s.hello.PrimaryAddr = r.Primary.Name, r.Primary.Addr
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, p := range s.opts.Peers {
		if s.shipsTo(p) {
			s.openLocked(p)
		}
	}
}

// shipsTo says whether the Sender ships to peer p: a propagator not to
// the node it follows, which ships to it.
func (s *Sender) shipsTo(p Peer) bool {
	return s.opts.Relay == nil || p.Name != s.opts.Relay.Upstream
}

// openLocked adds a link to p and starts it; the caller holds mu, and
// the Sender is not closed.
func (s *Sender) openLocked(p Peer) {
	ctx, stop := context.WithCancel(s.ctx)
	l := &link{peer: p, stop: stop, done: make(chan struct{}), state: StateConnecting}
	s.links = append(s.links, l)
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		defer close(l.done)
		s.keep(ctx, l)
	}()
}

// SetPeers ships to peers from now on (the node's peers read again on
// SIGHUP): a link opens to each new peer, and the link to each peer
// gone, or moved to another address, ends (and opens again at the new
// one). It returns once the links that end have. Commits that wait now
// decide again without the standbys gone. It says which peers it began
// and stopped shipping to (a moved one is in both).
func (s *Sender) SetPeers(peers []Peer) (added, removed []string) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil
	}
	var ended []*link
	kept := s.links[:0:0]
	for _, l := range s.links {
		if slices.Contains(peers, l.peer) && s.shipsTo(l.peer) {
			kept = append(kept, l)
			continue
		}
		ended = append(ended, l)
		removed = append(removed, l.peer.Name)
	}
	s.links = kept
	for _, p := range peers {
		if s.shipsTo(p) && !slices.ContainsFunc(kept, func(l *link) bool { return l.peer == p }) {
			s.openLocked(p)
			added = append(added, p.Name)
		}
	}
	s.ackedLocked() // the quorum may be another now
	s.mu.Unlock()
	for _, l := range ended {
		l.stop()
		<-l.done
	}
	if len(ended) > 0 && s.opts.OnAck != nil {
		s.opts.OnAck() // a propagator tells its sender they are gone
	}
	return added, removed
}

// Close stops every link; commits still waiting for their standbys
// return unconfirmed.
func (s *Sender) Close() {
	s.mu.Lock()
	s.closed = true
	s.wakeAllLocked()
	s.mu.Unlock()
	s.cancel()
	s.done.Wait()
}

// keep runs a link until ctx ends, opening it again after a failure with
// a growing pause.
func (s *Sender) keep(ctx context.Context, l *link) {
	log := s.opts.Logger.With("standby", l.peer.Name, "addr", l.peer.Addr)
	cc, err := s.opts.Dial(l.peer.Addr)
	if err != nil {
		s.setState(l, StateRefused, err.Error())
		log.Error("cannot reach the standby", "error", err)
		return
	}
	defer func() { _ = cc.Close() }() // the link is over; nothing to report
	pause, last := retryPause, ""
	for ctx.Err() == nil {
		sent, opened, _ := s.progressOf(l)
		err := s.stream(ctx, pb.NewReplicationServiceClient(cc), l, log)
		if ctx.Err() != nil {
			return
		}
		state := StateDisconnected
		switch {
		case errors.Is(err, errHistory):
			s.setState(l, state, err.Error())
			log.Info("the link ends: this node follows another primary's history now", "error", err)
			return
		case errors.Is(err, errNeedsImage):
			state = StateNeedsImage
		case status.Code(err) == codes.FailedPrecondition || status.Code(err) == codes.PermissionDenied:
			state = StateRefused
		}
		s.setState(l, state, err.Error())
		if msg := err.Error(); msg != last {
			log.Warn("the link to the standby broke", "state", state, "error", err)
			last = msg
		}
		// It got somewhere, or the link worked for longer than the pause
		// (a cut, not a standby that fails each link at once): try again
		// soon.
		if now, reopened, at := s.progressOf(l); now > sent || reopened > opened && time.Since(at) >= pause {
			pause = retryPause
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(pause):
		}
		pause = min(2*pause, maxRetryPause)
	}
}

// The pause before a link is opened again.
const (
	retryPause    = 100 * time.Millisecond
	maxRetryPause = 5 * time.Second
)

var (
	errNeedsImage = errors.New("replica: the standby needs an image")
	// errHistory ends a Sender's links for good: the node's epoch
	// history is no longer the one it ships under (a propagator follows
	// a new primary, or a primary stepped down). Records past that point
	// are of another history, which a new Sender ships.
	errHistory = errors.New("replica: this node's epoch history changed")
)

// stream runs one Ship call: hello, the standby's state, then batches
// from the ring while acknowledgements come back.
func (s *Sender) stream(ctx context.Context, c pb.ReplicationServiceClient, l *link, log hclog.Logger) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	st, err := c.Ship(ctx)
	if err != nil {
		return fmt.Errorf("replica: open a link to %s: %w", l.peer.Name, err)
	}
	db := s.store.DB()
	hello := proto.CloneOf(s.hello)
	hello.LastLsn = db.LastLSN()
	if err := st.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_Hello{Hello: hello}}); err != nil {
		_, err = st.Recv() // Send reports io.EOF; Recv has the reason
		return fmt.Errorf("replica: hello to %s: %w", l.peer.Name, err)
	}
	first, err := st.Recv()
	if err != nil {
		return fmt.Errorf("replica: %s: %w", l.peer.Name, err)
	}
	state := first.GetState()
	if state == nil {
		return fmt.Errorf("replica: %s answered the hello without its state", l.peer.Name)
	}
	if state.Node != l.peer.Name {
		return status.Errorf(codes.FailedPrecondition, "replica: peer %s at %s says it is node %q", l.peer.Name, l.peer.Addr, state.Node)
	}
	if state.Epoch > s.epoch {
		err := fmt.Errorf("replica: %s is at epoch %d, newer than this node's %d: another node was promoted", l.peer.Name, state.Epoch, s.epoch)
		if s.opts.OnNewerEpoch != nil {
			go s.opts.OnNewerEpoch(state.Epoch, l.peer.Name) // it closes this Sender
		}
		return status.Error(codes.FailedPrecondition, err.Error())
	}
	next := state.GetAppliedLsn()
	s.mu.Lock()
	l.state, l.reason, l.received, l.applied, l.sent, l.backlog = StateCatchingUp, "", next, next, next, hello.LastLsn
	if next >= hello.LastLsn {
		l.state = StateStreaming
	}
	l.opened++
	l.openedAt = time.Now()
	l.down = nil
	s.ackedLocked()
	s.mu.Unlock()
	if s.opts.OnAck != nil {
		s.opts.OnAck()
	}
	log.Info("link open", "applied-lsn", next, "last-lsn", hello.LastLsn)
	// Only this goroutine receives from now on; the stream ends when ctx
	// does, and with it the goroutine.
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		cancel(s.acks(st, l))
	}()
	defer func() {
		cancel(nil)
		<-acked
	}()

	ring := s.store.Ring()
	var (
		recs []durability.Record
		enc  batchEncoder
	)
	// send ships recs (consecutive, from next+1); a failed Send reports
	// io.EOF, and the acknowledgements' Recv has the reason and ends ctx
	// with it.
	send := func(recs []durability.Record) error {
		// Records are read before the history is checked: a record of a
		// new history is in the store only after the history was adopted.
		if last := s.opts.Epochs.Last(); last != s.last {
			return fmt.Errorf("%w: it ships epoch %d from LSN %d, and the history's newest stretch is epoch %d from LSN %d",
				errHistory, s.last.Epoch, s.last.Start, last.Epoch, last.Start)
		}
		msgs, err := enc.encode(recs, s.epoch, db.LastLSN(), s.opts.MaxMessageBytes/2)
		if err != nil {
			return err
		}
		next = recs[len(recs)-1].LSN
		s.mu.Lock()
		l.sent = next // before the standby can acknowledge it
		s.mu.Unlock()
		for _, m := range msgs {
			if err := st.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_Batch{Batch: m}}); err != nil {
				<-acked
				return context.Cause(ctx)
			}
		}
		return nil
	}
	for {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		var ok bool
		recs, ok = ring.Read(recs[:0], next, batchBytes)
		if !ok {
			err := s.catchUp(ctx, next, send)
			if errors.Is(err, errNeedsImage) {
				// The standby reloads from an image of this node's; the
				// message must reach it before the call is cut, so the
				// standby ends the call.
				if st.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_NeedsImage{NeedsImage: &pb.NeedsImage{Addr: s.opts.Addr, AppliedLsn: next}}}) == nil && st.CloseSend() == nil {
					select {
					case <-acked:
					case <-time.After(10 * time.Second):
					}
				}
			}
			if err != nil {
				return err
			}
			continue
		}
		if len(recs) == 0 {
			select {
			case <-ring.Wait(next):
			case <-ctx.Done():
			}
			continue
		}
		if err := s.store.WaitShippable(ctx, recs[0].LSN); err != nil {
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("replica: the log failed before LSN %d could be shipped: %w", recs[0].LSN, err)
		}
		limit := s.store.Shippable()
		for len(recs) > 0 && recs[len(recs)-1].LSN > limit {
			recs = recs[:len(recs)-1]
		}
		if len(recs) == 0 {
			continue // the node stepped down since: it ships what it has applied
		}
		if err := send(recs); err != nil {
			return err
		}
	}
}

// catchUp ships, from the log files, the records after next that the
// ring no longer holds, up to the ring's oldest, in batches, with send. A
// node without a log, or whose log no longer holds next+1 either, cannot:
// the standby needs an image.
func (s *Sender) catchUp(ctx context.Context, next uint64, send func([]durability.Record) error) error {
	needsImage := fmt.Errorf("%w: it has applied LSN %d and this node keeps its records from later on only", errNeedsImage, next)
	// Only records that meet the node's level are read: they are whole
	// on disk, where the log's tail may not be.
	if err := s.store.WaitShippable(ctx, next+1); err != nil {
		return fmt.Errorf("replica: wait for LSN %d to be shippable: %w", next+1, err)
	}
	// Only a log that provably lacks next+1 (none, one that starts later,
	// or one whose segments holding it were released) sends the standby
	// for an image; other failures are retried.
	r, err := s.store.ReadLog(next)
	switch {
	case errors.Is(err, logging.ErrReleased):
		return needsImage // the segments holding them were released after an image
	case err != nil:
		return fmt.Errorf("replica: catch up from the log: %w", err)
	case r == nil:
		return needsImage
	}
	var (
		recs  []durability.Record
		bytes int
	)
	// The ring takes over from its oldest record; a record the ring has
	// dropped since this began is read from the log all the same.
	limit := func() uint64 { return min(s.store.Ring().Oldest()-1, s.store.Shippable()) }
	upto := limit()
	for next < upto {
		rec, ok, err := r.Next()
		if errors.Is(err, logging.ErrReleased) {
			return errors.Join(needsImage, r.Close()) // released while they were read
		}
		if err != nil || !ok {
			return errors.Join(fmt.Errorf("replica: catching up, the log ends at LSN %d, before the records in memory", r.Last()), err, r.Close())
		}
		if want := next + uint64(len(recs)) + 1; rec.LSN != want {
			err := fmt.Errorf("replica: catching up, the log holds LSN %d where %d was due", rec.LSN, want)
			if rec.LSN > want && want == next+1 && len(recs) == 0 {
				err = fmt.Errorf("replica: the log starts at LSN %d: %w", rec.LSN, needsImage) // released
			}
			return errors.Join(err, r.Close())
		}
		recs = append(recs, durability.Record{LSN: rec.LSN, Body: slices.Clone(rec.Body)})
		bytes += len(rec.Body)
		if bytes >= batchBytes || rec.LSN == upto {
			if err := send(recs); err != nil {
				return errors.Join(err, r.Close())
			}
			next, recs, bytes = rec.LSN, recs[:0], 0
			if rec.LSN == upto {
				upto = max(upto, limit())
			}
		}
	}
	if err := r.Close(); err != nil {
		return fmt.Errorf("replica: catching up from the log: %w", err)
	}
	return nil
}

// acks takes a link's acknowledgements until the stream ends.
func (s *Sender) acks(st grpc.BidiStreamingClient[pb.ShipRequest, pb.ShipResponse], l *link) error {
	for {
		m, err := st.Recv()
		if err != nil {
			return fmt.Errorf("replica: %s: %w", l.peer.Name, err)
		}
		ack := m.GetAck()
		if ack == nil {
			return fmt.Errorf("replica: %s sent something other than an acknowledgement", l.peer.Name)
		}
		s.mu.Lock()
		if ack.ReceivedLsn < l.received || ack.AppliedLsn < l.applied || ack.AppliedLsn > ack.ReceivedLsn || ack.ReceivedLsn > l.sent {
			bad := fmt.Errorf("replica: %s acknowledged received %d and applied %d, after %d and %d with %d sent",
				l.peer.Name, ack.ReceivedLsn, ack.AppliedLsn, l.received, l.applied, l.sent)
			s.mu.Unlock()
			return bad
		}
		down, err := downstream(ack.GetDownstream(), l)
		if err != nil {
			s.mu.Unlock()
			return err
		}
		l.received, l.applied, l.down = ack.ReceivedLsn, ack.AppliedLsn, down
		if l.applied >= l.backlog {
			l.state = StateStreaming
		}
		s.ackedLocked()
		s.mu.Unlock()
		if s.opts.OnAck != nil {
			s.opts.OnAck()
		}
	}
}

// downstream checks the standbys a propagator reports behind it (on link
// l): none can hold a record it was not sent. The caller holds mu.
func downstream(acks []*pb.StandbyAck, l *link) ([]Standby, error) {
	if len(acks) > maxDownstream {
		return nil, fmt.Errorf("replica: %s reports %d standbys behind it, more than %d", l.peer.Name, len(acks), maxDownstream)
	}
	var down []Standby
	for _, a := range acks {
		if a.Node == "" || a.AppliedLsn > a.ReceivedLsn || a.ReceivedLsn > l.sent {
			return nil, fmt.Errorf("replica: %s reports standby %q behind it with received %d and applied %d, with %d sent",
				l.peer.Name, a.Node, a.ReceivedLsn, a.AppliedLsn, l.sent)
		}
		down = append(down, Standby{Name: a.Node, Addr: a.Addr, State: a.State, Reason: a.Reason, Received: a.ReceivedLsn, Applied: a.AppliedLsn, Via: a.Via})
	}
	return down, nil
}

// Downstream returns every standby this node ships to, and those behind
// them, for a propagator's acknowledgements: each once (as far as it
// got, however many ways it is reported), at most maxDownstream.
func (s *Sender) Downstream() []*pb.StandbyAck {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*pb.StandbyAck
	at := map[string]int{}
	add := func(a *pb.StandbyAck) {
		i, ok := at[a.Node]
		switch {
		case !ok && len(out) < maxDownstream:
			at[a.Node] = len(out)
			out = append(out, a)
		case ok && (a.AppliedLsn > out[i].AppliedLsn || a.AppliedLsn == out[i].AppliedLsn && a.ReceivedLsn > out[i].ReceivedLsn):
			out[i] = a
		}
	}
	for _, l := range s.links {
		add(&pb.StandbyAck{Node: l.peer.Name, Addr: l.peer.Addr, State: l.state, Reason: l.reason, ReceivedLsn: l.received, AppliedLsn: l.applied, Via: s.opts.Node})
		for _, d := range l.down {
			add(&pb.StandbyAck{Node: d.Name, Addr: d.Addr, State: d.State, Reason: d.Reason, ReceivedLsn: d.Received, AppliedLsn: d.Applied, Via: d.Via})
		}
	}
	return out
}

// ackWaiter is a commit waiting in Wait for the acknowledgement of lsn
// under mode (negative: the node's); ch is closed to wake it.
type ackWaiter struct {
	lsn  uint64
	mode Mode
	ch   chan struct{}
}

// ackedLocked wakes the commits waiting for acknowledgements that the
// quorum now holds, and ends a degradation once the quorum has caught
// up; the caller holds mu. It wakes no other waiter: with many commits
// waiting, waking them all at each acknowledgement cost the node a
// goroutine switch and a pass of Wait per commit per acknowledgement.
func (s *Sender) ackedLocked() {
	if len(s.waiters) > 0 {
		received, applied := s.quorumLocked(ReceivedAck), s.quorumLocked(AppliedAck)
		kept := s.waiters[:0]
		for _, w := range s.waiters {
			m := w.mode
			if m < 0 {
				m = s.opts.Mode
			}
			q := received
			if m == AppliedAck {
				q = applied
			}
			if m == Async || q >= w.lsn {
				close(w.ch)
				continue
			}
			kept = append(kept, w)
		}
		clear(s.waiters[len(kept):])
		s.waiters = kept
	}
	s.resumeLocked()
}

// wakeAllLocked wakes every waiting commit, for a change that is not the
// quorum's (settings, a degradation, Close): each looks again at what to
// do. The caller holds mu.
func (s *Sender) wakeAllLocked() {
	for _, w := range s.waiters {
		close(w.ch)
	}
	clear(s.waiters)
	s.waiters = s.waiters[:0]
}

// dropWaiterLocked forgets w, unless it was woken already. The caller
// holds mu.
func (s *Sender) dropWaiterLocked(w *ackWaiter) {
	if i := slices.Index(s.waiters, w); i >= 0 {
		last := len(s.waiters) - 1
		s.waiters[i] = s.waiters[last]
		s.waiters[last] = nil
		s.waiters = s.waiters[:last]
	}
}

// resumeLocked ends a degradation once the quorum has caught up, under
// the sync mode that degraded: it has reached the last LSN as of a moment less than half a sync_timeout ago,
// so a commit made now would be answered in time, or it holds the last
// LSN now (nothing is left to ship: no acknowledgement would come to end
// it later). Each time the quorum reaches the mark later than that, the
// mark moves to the last LSN now. The caller holds mu.
func (s *Sender) resumeLocked() {
	if !s.degraded {
		return
	}
	q := s.quorumLocked(s.resumeIn)
	if q < s.resumeAt {
		return
	}
	if time.Since(s.resumeBy) < s.opts.Timeout/2 || q >= s.store.DB().LastLSN() {
		s.degraded = false
		s.opts.Logger.Info("the standbys caught up: commits wait for them again", "sync-mode", s.resumeIn, "lsn", s.resumeAt)
		return
	}
	s.resumeAt, s.resumeBy = s.store.DB().LastLSN(), time.Now()
}

// counts reports whether the standby name's acknowledgements count
// towards the quorum: never a relay's report that names this node, which
// is no standby of it, and otherwise those Counted names (all, if none).
func (s *Sender) counts(name string) bool {
	return name != s.opts.Node && (len(s.opts.Counted) == 0 || slices.Contains(s.opts.Counted, name))
}

// quorumLocked returns the largest LSN that Quorum standbys have
// acknowledged under mode; the caller holds mu.
func (s *Sender) quorumLocked(mode Mode) uint64 {
	if s.opts.Quorum <= 0 {
		return ^uint64(0)
	}
	// No allocation for up to 32 standbys: every commit and read that
	// waits comes here. A standby counts once, even if it is reported
	// both by its own link and behind a propagator.
	var (
		nameBuf [32]string
		ackBuf  [32]uint64
	)
	names, acked := nameBuf[:0], ackBuf[:0]
	add := func(name string, received, applied uint64) {
		if !s.counts(name) {
			return
		}
		v := received
		if mode == AppliedAck {
			v = applied
		}
		for i, n := range names {
			if n == name {
				acked[i] = max(acked[i], v)
				return
			}
		}
		names, acked = append(names, name), append(acked, v)
	}
	for _, l := range s.links {
		add(l.peer.Name, l.received, l.applied)
		for _, d := range l.down {
			add(d.Name, d.Received, d.Applied)
		}
	}
	if len(acked) < s.opts.Quorum {
		return 0
	}
	// The Quorum-th largest.
	for i := range s.opts.Quorum {
		for j := i + 1; j < len(acked); j++ {
			if acked[j] > acked[i] {
				acked[i], acked[j] = acked[j], acked[i]
			}
		}
	}
	return acked[s.opts.Quorum-1]
}

// ErrUnconfirmed is returned, wrapped, when a commit's deadline passes
// before its quorum answers (on_sync_timeout = block).
var ErrUnconfirmed = errors.New("replica: the commit is local but unconfirmed by the standbys")

// Holds reports whether Wait would return at once, with nothing to wait
// for: the mode (mode, or the node's when mode is negative) is async,
// lsn is zero, or Quorum standbys have acknowledged lsn as the mode asks.
func (s *Sender) Holds(lsn uint64, mode Mode) bool {
	if mode == Async || lsn == 0 {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, held := s.heldLocked(lsn, mode)
	return held
}

// heldLocked returns mode, or the node's when mode is negative, and
// whether the commit at lsn has nothing to wait for under it: the mode is
// async, or Quorum standbys have acknowledged lsn as it asks. The caller
// holds mu.
func (s *Sender) heldLocked(lsn uint64, mode Mode) (Mode, bool) {
	if mode < 0 {
		mode = s.opts.Mode
	}
	return mode, mode == Async || s.quorumLocked(mode) >= lsn
}

// Wait returns once Quorum standbys have acknowledged the commit at lsn
// as the sync mode asks (mode, or the node's when mode is negative).
// When they do not answer within the timeout, it returns degraded (and
// commits return at once, degraded, until the standbys catch up), or,
// with Block, goes on waiting until ctx ends and returns ErrUnconfirmed.
// The timeout counts from when this commit began to wait, or from when
// an earlier commit the quorum has not answered yet did, if earlier,
// though that one's caller has gone (since the last SetSync or
// degradation).
func (s *Sender) Wait(ctx context.Context, lsn uint64, mode Mode) (degraded bool, err error) {
	if mode == Async || lsn == 0 {
		return false, nil
	}
	// Each pass decides with the settings as they are then: SetSync may
	// change the node's mode, the quorum, the timeout or block while a
	// commit waits. The timeout counts from when the commit began to
	// wait.
	began := time.Now()
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.mu.Lock()
		m, held := s.heldLocked(lsn, mode)
		if held {
			s.mu.Unlock()
			return false, nil
		}
		if s.closed {
			s.mu.Unlock()
			return false, fmt.Errorf("%w: LSN %d: this node stopped shipping its log (it stepped down or shuts down)", ErrUnconfirmed, lsn)
		}
		if s.resumeLocked(); s.degraded {
			s.mu.Unlock()
			return true, nil
		}
		// The timeout counts from the oldest wait the quorum has not
		// answered yet, this one's or an earlier commit's whose caller
		// gave up first: otherwise clients whose deadlines are shorter
		// than sync_timeout would keep the node from ever degrading.
		if s.lateSince.IsZero() || s.quorumLocked(s.lateMode) >= s.lateLSN {
			s.lateLSN, s.lateMode, s.lateSince = lsn, m, began
		}
		since := began
		if s.lateSince.Before(since) {
			since = s.lateSince
		}
		if !s.opts.Block && time.Since(since) >= s.opts.Timeout {
			s.degraded, s.resumeAt, s.resumeBy, s.resumeIn = true, s.store.DB().LastLSN(), time.Now(), m
			s.lateSince = time.Time{} // once resumed, waits count afresh
			s.opts.Logger.Warn("the standbys did not answer in sync_timeout: commits no longer wait for them until they catch up",
				"sync-mode", m, "lsn", lsn, "quorum", s.opts.Quorum, "timeout", s.opts.Timeout)
			// The other waiters return degraded too, now.
			s.wakeAllLocked()
			s.resumeLocked()
			s.mu.Unlock()
			return true, nil
		}
		w := &ackWaiter{lsn: lsn, mode: mode, ch: make(chan struct{})}
		s.waiters = append(s.waiters, w)
		block, until, quorum := s.opts.Block, since.Add(s.opts.Timeout), s.opts.Quorum
		s.mu.Unlock()
		var timeout <-chan time.Time
		if !block {
			if timer == nil {
				timer = time.NewTimer(time.Until(until))
			} else {
				timer.Reset(time.Until(until))
			}
			timeout = timer.C
		}
		select {
		case <-w.ch:
		case <-timeout: // the next pass degrades, if it still should
			s.mu.Lock()
			s.dropWaiterLocked(w)
			s.mu.Unlock()
		case <-ctx.Done():
			s.mu.Lock()
			s.dropWaiterLocked(w)
			s.mu.Unlock()
			return false, fmt.Errorf("%w: LSN %d waited for %d standbys to answer (%s): %w", ErrUnconfirmed, lsn, quorum, m, ctx.Err())
		}
	}
}

// SetSync changes what commits wait for, as SenderOptions' Mode, Quorum,
// Counted, Timeout and Block say (a node's sync settings read again on
// SIGHUP). Commits waiting now see the change at once: those that wait
// for the node's mode return when it becomes async, a quorum that the
// new rule finds met releases them, and a new timeout counts from when
// each began to wait. A degradation ends when there is nothing left to
// wait for or commits are to block; otherwise it ends, as before, once
// the quorum catches up.
func (s *Sender) SetSync(mode Mode, quorum int, counted []string, timeout time.Duration, block bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.opts.Mode, s.opts.Quorum, s.opts.Counted, s.opts.Timeout, s.opts.Block = mode, quorum, slices.Clone(counted), timeout, block
	s.lateSince = time.Time{} // the new timeout counts from when the commits waiting now began
	if mode == Async || quorum <= 0 || block {
		s.degraded = false
	}
	s.wakeAllLocked()
	s.resumeLocked()
}

// Degraded reports whether commits go on without their quorum.
func (s *Sender) Degraded() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.degraded
}

// Standby is a standby's state as its primary sees it.
type Standby struct {
	Name, Addr, State, Reason string
	Via                       string // the propagator it follows, if it is behind one
	Received, Applied         uint64
	LagRecords                uint64
	LagBytes                  uint64        // their size (Ring.BytesBetween: estimated for records no longer in memory)
	Lag                       time.Duration // how long ago the oldest record it has not applied was committed
	Opened                    int           // how many times its link was opened
	OutsideQuorum             bool          // its acknowledgements do not count towards the quorum (SenderOptions.Counted)
}

// Standbys returns the state of every link, and of the standbys behind
// them: each standby once, however many ways it is reported (its own
// link, down since it follows a propagator, and the propagator's
// report), as it is seen best (ahead); a report naming this node is
// left out.
func (s *Sender) Standbys() []Standby {
	last := s.store.DB().LastLSN()
	s.mu.Lock()
	out := make([]Standby, 0, len(s.links))
	at := make(map[string]int, len(s.links))
	add := func(st Standby) {
		if st.Name == s.opts.Node {
			return
		}
		if last > st.Applied {
			st.LagRecords = last - st.Applied
		}
		if s.degraded && st.LagRecords > 0 && (st.State == StateStreaming || st.State == StateCatchingUp) {
			st.State = StateDegraded
		}
		st.OutsideQuorum = !s.counts(st.Name)
		switch i, ok := at[st.Name]; {
		case !ok:
			at[st.Name] = len(out)
			out = append(out, st)
		case ahead(st, out[i]):
			out[i] = st
		}
	}
	for _, l := range s.links {
		add(Standby{Name: l.peer.Name, Addr: l.peer.Addr, State: l.state, Reason: l.reason, Received: l.received, Applied: l.applied, Opened: l.opened})
		for _, d := range l.down {
			add(d)
		}
	}
	s.mu.Unlock()
	ring := s.store.Ring()
	for i := range out {
		if out[i].LagRecords > 0 {
			if at, ok := ring.AddedAt(out[i].Applied + 1); ok {
				out[i].Lag = time.Since(at)
			}
			out[i].LagBytes = ring.BytesBetween(out[i].Applied, last)
		}
	}
	return out
}

// ahead reports whether a, a report of a standby, shows it better than
// b, another of the same standby: following the log (not disconnected,
// refused or in need of an image) where b does not, or else further
// along.
func ahead(a, b Standby) bool {
	if fa, fb := a.following(), b.following(); fa != fb {
		return fa
	}
	return a.Applied > b.Applied || a.Applied == b.Applied && a.Received > b.Received
}

// following reports whether the standby takes the log now.
func (st Standby) following() bool {
	switch st.State {
	case StateStreaming, StateCatchingUp, StateDegraded:
		return true
	}
	return false
}

// setState sets the state of a link that is not open; the standbys
// behind it, if it is a propagator, are out of sight.
func (s *Sender) setState(l *link, state, reason string) {
	s.mu.Lock()
	l.state, l.reason, l.down = state, reason, nil
	s.mu.Unlock()
	if s.opts.OnAck != nil {
		s.opts.OnAck() // a propagator tells its sender
	}
}

// progressOf returns how far link l has shipped, how many times it was
// opened, and when it last opened.
func (s *Sender) progressOf(l *link) (sent uint64, opened int, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return l.sent, l.opened, l.openedAt
}
