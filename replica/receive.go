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
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// ReceiverOptions configure a Receiver.
type ReceiverOptions struct {
	Node  string   // this node's name
	Peers []string // the nodes it takes log from (SetPeers changes them)
	// Epochs is the node's history; a standby takes its sender's.
	Epochs *Epochs
	// StepDown, when set, is called on a primary that a peer of a newer
	// epoch ships to: it must make the store a standby (or fail), and the
	// link is then followed.
	StepDown func(epoch uint64, sender string) error
	// Diverged, when set, is called when this node holds records from LSN
	// at to last that the sender's log does not have (see Diverged), from
	// the sender at addr; older says those records are of an epoch older
	// than the sender's (a former primary's tail), not of the sender's own
	// (a tail the sender lost). The link is refused either way.
	Diverged func(at, last uint64, sender, addr string, older bool)
	// NeedsImage, when set, is called when the sender (the peer its hello
	// names, which Authorize checked) no longer holds the records after
	// this node's applied LSN: the node must reload from an image of the
	// sender's, which clients (and ImageService) reach at addr, the
	// address the sender gives of itself.
	NeedsImage func(sender, addr string, applied uint64)
	// OnFollow, when set, is called (and must not block) once the node
	// follows a sender, whose log it may relay (see Upstream).
	OnFollow func()
	// Downstream, when set, returns the standbys this node ships to (a
	// propagator): its acknowledgements carry them to its sender.
	Downstream func() []*pb.StandbyAck
	// Authorize, when set, checks that the caller (whose credentials
	// ctx carries) is the peer sender its hello names.
	Authorize func(ctx context.Context, sender string) error
	Logger    hclog.Logger
}

// Receiver is a standby's end of replication: it implements
// ReplicationService. It follows one sender at a time. Records are
// checked as their batch arrives (checksum, no gap, same epoch, each
// record decodes) and acknowledged as received; an applier takes them in
// LSN order (durability.Store.Replicate: logged at the node's own level,
// then applied) and acknowledges them as applied. A batch that fails a
// check ends the call with nothing of it applied; what was received
// before is still applied. A bounded queue between the two holds
// received batches: when the applier falls behind, receiving stops and
// gRPC flow control holds the sender back.
type Receiver struct {
	pb.UnimplementedReplicationServiceServer
	store *durability.Store
	opts  ReceiverOptions

	mu     sync.Mutex
	peers  map[string]bool // the nodes it takes log from
	follow *following      // the link being followed, if any
	up     *Relay          // whose log the node follows, as of the latest link
	closed bool            // Stop: links are refused
	shut   bool            // Close: links are refused for good
	// stops counts the calls of Stop: a decision to follow a sender
	// (admit) made before one is stale, for a promotion (Stop, Resume)
	// may have made the node a primary at a new epoch since.
	stops uint64
}

// following is one followed link.
type following struct {
	node   string
	epoch  uint64
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when its call has ended and its records are applied
	p      *progress     // set once the link is open
}

// maxVia bounds the relays a log may come through.
const maxVia = 16

// queueBatches bounds the received batches waiting to be applied.
const queueBatches = 16

// NewReceiver returns the receiving end of replication into store.
func NewReceiver(store *durability.Store, opts ReceiverOptions) *Receiver {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	r := &Receiver{store: store, opts: opts}
	r.SetPeers(opts.Peers)
	return r
}

// SetPeers takes log only from peers from now on (the node's peers read
// again on SIGHUP). A link being followed from a node that is no longer
// one is told to end; it ends once what it received is applied, after
// SetPeers has returned.
func (r *Receiver) SetPeers(peers []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peers = map[string]bool{}
	for _, p := range peers {
		r.peers[p] = true
	}
	if f := r.follow; f != nil && !r.peers[f.node] {
		f.cancel(&codeError{codes.PermissionDenied, fmt.Errorf("replication: %q is no longer a peer of %s", f.node, r.opts.Node)})
	}
}

var (
	errReplaced = errors.New("replica: a newer link from the same sender replaced this one")
	errClosed   = errors.New("replica: this node takes no log now (it is being promoted or shuts down)")
)

// Resume takes links again after Stop, unless Close came meanwhile.
func (r *Receiver) Resume() {
	r.mu.Lock()
	r.closed = r.shut
	r.mu.Unlock()
}

// Close stops as Stop does, for good: a Resume still under way (a
// promotion's) does not take links again.
func (r *Receiver) Close() {
	r.mu.Lock()
	r.shut = true
	r.mu.Unlock()
	r.Stop()
}

// Stop ends the link being followed, once what it received is applied,
// and refuses new ones until Resume; the node then follows no one
// (Upstream).
func (r *Receiver) Stop() {
	r.mu.Lock()
	r.closed, r.up = true, nil
	r.stops++
	f := r.follow
	if f != nil {
		f.cancel(errClosed)
	}
	r.mu.Unlock()
	if f != nil {
		<-f.done
	}
}

// Ship follows a sender (see ReplicationService in the proto).
func (r *Receiver) Ship(st grpc.BidiStreamingServer[pb.ShipRequest, pb.ShipResponse]) error {
	m, err := st.Recv()
	if err != nil {
		return err
	}
	hello := m.GetHello()
	if hello == nil {
		err := status.Error(codes.InvalidArgument, "replication: the first message must be a hello")
		from := "unknown"
		if p, ok := peer.FromContext(st.Context()); ok {
			from = p.Addr.String()
		}
		r.opts.Logger.Warn("refused a replication link", "peer-addr", from, "error", err)
		return err
	}
	log := r.opts.Logger.With("sender", hello.Node, "sender-addr", hello.Addr, "sender-epoch", hello.Epoch)
	ctx, cancel := context.WithCancelCause(st.Context())
	defer cancel(nil)
	f, err := r.admit(ctx, hello, cancel)
	if err != nil {
		log.Warn("refused a replication link", "error", err)
		if errors.Is(err, errOlderEpoch) {
			// The sender learns of the newer epoch, and steps down.
			_ = st.Send(&pb.ShipResponse{Msg: &pb.ShipResponse_State{State: r.state()}}) // the refusal follows either way
		}
		return err
	}
	defer r.unfollow(f)

	state := r.state()
	applied := state.AppliedLsn
	if err := st.Send(&pb.ShipResponse{Msg: &pb.ShipResponse_State{State: state}}); err != nil {
		return err
	}
	log.Info("following", "applied-lsn", applied, "sender-last-lsn", hello.LastLsn)

	p := &progress{received: applied, applied: applied, poke: make(chan struct{}, 1)}
	if r.opts.Downstream != nil {
		// The sender forgets the standbys behind this node when a link
		// opens: tell it of them now, not at the next change, which may
		// never come while a commit they hold waits for them.
		p.nudge()
	}
	r.mu.Lock()
	f.p = p
	r.mu.Unlock()
	if r.opts.OnFollow != nil {
		r.opts.OnFollow()
	}
	queue := make(chan []received, queueBatches)
	drained, acked := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(drained)
		r.apply(queue, p, cancel, epochsFromPB(hello.Epochs))
	}()
	go func() {
		defer close(acked)
		if err := p.acknowledge(ctx, st, r.opts.Downstream); err != nil {
			cancel(err)
		}
	}()
	err = r.receive(ctx, st, hello, queue, p)
	close(queue)
	<-drained // what was received is applied, link or no link
	cancel(err)
	<-acked
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	switch {
	case errors.Is(err, errReplaced):
		log.Info("link replaced", "applied-lsn", p.appliedLSN())
		return status.Error(codes.Aborted, err.Error())
	case err != nil:
		log.Warn("link ended", "applied-lsn", p.appliedLSN(), "error", err)
		if _, ok := status.FromError(err); !ok {
			code := codes.Unavailable
			switch {
			case errors.Is(err, ErrBatch):
				code = codes.DataLoss
			case errors.Is(err, errApply):
				code = codes.FailedPrecondition
			}
			return status.Error(code, err.Error())
		}
	}
	return err
}

// Upstream says whose log the node follows (or last followed): the
// primary, the relays it came through, and the node that ships it here.
func (r *Receiver) Upstream() (Relay, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.up == nil {
		return Relay{}, false
	}
	return *r.up, true
}

// Poke sends the followed sender an acknowledgement now (a propagator's
// standbys have answered).
func (r *Receiver) Poke() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if f := r.follow; f != nil && f.p != nil {
		f.p.nudge()
	}
}

func (r *Receiver) state() *pb.ShipState {
	// The newest epoch it knows of, so that a sender older than one it
	// heard of (Observe) learns of it and steps down.
	epoch := max(r.opts.Epochs.Current(), r.opts.Epochs.Seen())
	return &pb.ShipState{Node: r.opts.Node, Epoch: epoch, AppliedLsn: r.store.DB().LastLSN()}
}

// errOlderEpoch marks the refusal of a sender whose epoch is older than
// the receiver's.
var errOlderEpoch = errors.New("an older epoch")

// admit decides whether to follow the sender that said hello; it takes
// over from a link it replaces once that one has ended.
func (r *Receiver) admit(ctx context.Context, hello *pb.ShipHello, cancel context.CancelCauseFunc) (*following, error) {
	r.mu.Lock()
	peer := r.peers[hello.Node]
	r.mu.Unlock()
	if !peer {
		return nil, r.notPeer(hello.Node)
	}
	if r.opts.Authorize != nil {
		if err := r.opts.Authorize(ctx, hello.Node); err != nil {
			return nil, err
		}
	}
	theirs := epochsFromPB(hello.Epochs)
	if err := checkEpochs(theirs); err != nil || theirs[len(theirs)-1].Epoch != hello.Epoch {
		return nil, status.Errorf(codes.InvalidArgument, "replication: %s's epoch history does not end at its epoch %d: %v", hello.Node, hello.Epoch, err)
	}
	if via := hello.GetVia(); len(via) > 0 {
		if len(via) > maxVia || via[len(via)-1] != hello.Node || hello.Primary == "" || slices.Contains(via, "") {
			return nil, status.Errorf(codes.InvalidArgument, "replication: %s relays the log of %q through %q: not a chain that ends at it", hello.Node, hello.Primary, via)
		}
		if slices.Contains(via, r.opts.Node) || hello.Primary == r.opts.Node {
			return nil, status.Errorf(codes.FailedPrecondition, "replication: %s relays the log of %s through %q, which names %s: a loop", hello.Node, hello.Primary, via, r.opts.Node)
		}
	}
	for {
		stops, err := r.decide(hello, theirs)
		if err != nil {
			return nil, err
		}
		f, stale, err := r.link(ctx, hello, theirs, cancel, stops)
		if !stale {
			return f, err
		}
		// A promotion came since the decision: decide again, on what the
		// node is now (a primary steps down for the sender, or refuses it).
	}
}

// deciding is called as admit decides whether to follow a sender, once
// it has read whether the node is a standby; a test promotes the node
// there.
var deciding = func() {}

// decide checks that the node may follow the sender that said hello (of
// epoch history theirs): it takes links, knows of no newer epoch, and is
// a standby, or a primary that the sender wins over and that steps down.
// It returns the count of Stops the decision holds for (link).
func (r *Receiver) decide(hello *pb.ShipHello, theirs []EpochStart) (stops uint64, err error) {
	r.mu.Lock()
	closed, stops := r.closed, r.stops
	r.mu.Unlock()
	if closed {
		return 0, status.Error(codes.Unavailable, errClosed.Error())
	}
	// The role is read before the epoch: a promotion begins its epoch
	// before the store takes commits (Lead), so a primary's epoch read
	// after is its own; read before, it may be the standby's, older, and
	// the primary would step down for a sender it wins over.
	_, _, standby := r.store.Standby()
	deciding()
	mine := r.opts.Epochs.History()
	own := mine[len(mine)-1]
	if newest := max(own.Epoch, r.opts.Epochs.Seen()); hello.Epoch < newest {
		// Seen: a node that stepped down for a primary at a newer epoch
		// it has not followed yet refuses older ones too.
		return 0, &codeError{codes.FailedPrecondition, fmt.Errorf("replication: %s knows of epoch %d; %s's epoch %d is older: %w", r.opts.Node, newest, hello.Node, hello.Epoch, errOlderEpoch)}
	}
	if !standby {
		// Two primaries: the newer epoch wins, and at the same epoch (two
		// nodes promoted at once) the higher incarnation.
		newer := hello.Epoch > own.Epoch || theirs[len(theirs)-1].Incarnation > own.Incarnation
		if !newer || r.opts.StepDown == nil {
			return 0, status.Errorf(codes.FailedPrecondition, "replication: %s is a primary at epoch %d", r.opts.Node, own.Epoch)
		}
		if err := r.opts.StepDown(hello.Epoch, hello.Node); err != nil {
			return 0, status.Errorf(codes.FailedPrecondition, "replication: %s is a primary and could not step down for epoch %d: %v", r.opts.Node, hello.Epoch, err)
		}
	}
	return stops, nil
}

// link follows the sender admit decided on, as of stops (decide), once
// the link it replaces, if any, has ended. stale says a Stop came since
// the decision (a promotion may have made the node a primary at a new
// epoch, and Resume let links in again): the link was not taken, and
// the decision must be made again. The check is made under mu, which
// Stop takes, so a promotion either comes before (and the decision is
// stale) or finds the link to end.
func (r *Receiver) link(ctx context.Context, hello *pb.ShipHello, theirs []EpochStart, cancel context.CancelCauseFunc, stops uint64) (f *following, stale bool, err error) {
	for {
		r.mu.Lock()
		switch {
		case r.closed:
			r.mu.Unlock()
			return nil, false, status.Error(codes.Unavailable, errClosed.Error())
		case r.stops != stops:
			r.mu.Unlock()
			return nil, true, nil
		case !r.peers[hello.Node]: // SetPeers came meanwhile
			r.mu.Unlock()
			return nil, false, r.notPeer(hello.Node)
		}
		old := r.follow
		if old == nil {
			f := &following{node: hello.Node, epoch: hello.Epoch, cancel: cancel, done: make(chan struct{})}
			r.follow = f
			r.mu.Unlock()
			if err := r.take(ctx, hello, theirs); err != nil {
				r.unfollow(f)
				return nil, false, err
			}
			return f, false, nil
		}
		if old.node != hello.Node && hello.Epoch <= old.epoch {
			r.mu.Unlock()
			return nil, false, status.Errorf(codes.FailedPrecondition, "replication: %s follows %s at epoch %d", r.opts.Node, old.node, old.epoch)
		}
		// The same sender again (its old link may be dead without our
		// knowing), or a newer epoch's: end the old link and wait.
		old.cancel(errReplaced)
		r.mu.Unlock()
		select {
		case <-old.done:
		case <-ctx.Done():
			return nil, false, status.FromContextError(ctx.Err()).Err()
		}
	}
}

// unfollow ends link f: the node follows no one from then on until
// another link is taken. A link is no longer followed once its done is
// closed, so that the sender that comes next is not refused for it.
func (r *Receiver) unfollow(f *following) {
	r.mu.Lock()
	if r.follow == f {
		r.follow = nil
	}
	r.mu.Unlock()
	close(f.done)
}

// take checks, with nothing else changing the database (no other link
// applies, and commits that were in flight when the node became a
// standby are installed), that this node's log is a prefix of the
// sender's, and takes the sender's history and name.
func (r *Receiver) take(ctx context.Context, hello *pb.ShipHello, theirs []EpochStart) error {
	if err := r.store.Settle(ctx); err != nil {
		return status.Errorf(codes.Unavailable, "replication: %v", err)
	}
	// admit checked the sender's epoch before it waited its turn (a
	// step-down, a link it replaced): a newer sender's link may have been
	// taken meanwhile, and its history adopted. Its records are no tail
	// to set aside for an older sender.
	mine := r.opts.Epochs.History()
	if newest := max(mine[len(mine)-1].Epoch, r.opts.Epochs.Seen()); hello.Epoch < newest {
		return &codeError{codes.FailedPrecondition, fmt.Errorf("replication: %s knows of epoch %d; %s's epoch %d is older: %w", r.opts.Node, newest, hello.Node, hello.Epoch, errOlderEpoch)}
	}
	applied := r.store.DB().LastLSN()
	if lsn, diverged := Diverged(mine, theirs, r.opts.Epochs.Known(), applied); diverged {
		if r.opts.Diverged != nil {
			older := stretchAt(mine, lsn).Epoch < hello.Epoch
			r.opts.Diverged(lsn, applied, hello.Node, hello.Addr, older)
		}
		return status.Errorf(codes.FailedPrecondition, "replication: %s's log diverged from %s's at LSN %d (it holds records up to %d; from there on they are of another epoch or incarnation)", r.opts.Node, hello.Node, lsn, applied)
	}
	if applied > hello.LastLsn {
		if len(hello.Via) > 0 {
			// It may have followed the primary, or a propagator further on.
			return status.Errorf(codes.Unavailable, "replication: %s has applied LSN %d, past the last LSN %d of propagator %s: it follows once the propagator catches up", r.opts.Node, applied, hello.LastLsn, hello.Node)
		}
		return status.Errorf(codes.FailedPrecondition, "replication: %s has applied LSN %d, past %s's last LSN %d: their logs have diverged", r.opts.Node, applied, hello.Node, hello.LastLsn)
	}
	if err := r.opts.Epochs.Adopt(theirs); err != nil {
		return status.Errorf(codes.Internal, "replication: %v", err)
	}
	up := &Relay{Primary: Peer{Name: hello.Node, Addr: hello.Addr}, Upstream: hello.Node}
	if hello.Primary != "" {
		up.Primary, up.Via = Peer{Name: hello.Primary, Addr: hello.PrimaryAddr}, hello.Via
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		// Stop came meanwhile (a promotion): the node follows no one.
		return status.Error(codes.Unavailable, errClosed.Error())
	}
	r.up = up
	r.store.SetPrimary(up.Primary.Name, up.Primary.Addr)
	return nil
}

// notPeer is the refusal of a sender that is not a peer.
func (r *Receiver) notPeer(sender string) error {
	return status.Errorf(codes.PermissionDenied, "replication: %q is not a peer of %s", sender, r.opts.Node)
}

// codeError is a refusal with its gRPC code that errors.Is can look
// into.
type codeError struct {
	code codes.Code
	err  error
}

func (e *codeError) Error() string              { return e.err.Error() }
func (e *codeError) Unwrap() error              { return e.err }
func (e *codeError) GRPCStatus() *status.Status { return status.New(e.code, e.err.Error()) }

// received is a record checked and decoded, waiting to be applied.
type received struct {
	lsn  uint64
	body []byte
	redo *mem.Redo
}

// receive takes batches until the call ends or one fails its checks.
func (r *Receiver) receive(ctx context.Context, st grpc.BidiStreamingServer[pb.ShipRequest, pb.ShipResponse], hello *pb.ShipHello, queue chan<- []received, p *progress) error {
	// Recv does not heed ctx, which a Close or a replacing link ends: it
	// runs on a goroutine of its own, which ends with the call.
	type msg struct {
		m   *pb.ShipRequest
		err error
	}
	in := make(chan msg)
	go func() {
		for {
			m, err := st.Recv()
			select {
			case in <- msg{m, err}:
			case <-st.Context().Done():
				return
			}
			if err != nil {
				return
			}
		}
	}()
	var dec batchDecoder
	next := p.receivedLSN() + 1
	for {
		var m msg
		select {
		case m = <-in:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if m.err != nil {
			return m.err
		}
		if ni := m.m.GetNeedsImage(); ni != nil && r.opts.NeedsImage != nil {
			r.opts.NeedsImage(hello.Node, ni.GetAddr(), ni.GetAppliedLsn())
			return status.Errorf(codes.FailedPrecondition, "replication: %s no longer holds the records after LSN %d: this node needs an image", hello.Node, ni.GetAppliedLsn())
		}
		b := m.m.GetBatch()
		if b == nil {
			return status.Error(codes.InvalidArgument, "replication: after the hello, only batches")
		}
		recs, err := dec.add(b)
		if err != nil {
			return err
		}
		if recs == nil {
			continue
		}
		if b.Epoch != hello.Epoch {
			return status.Errorf(codes.FailedPrecondition, "replication: a batch from LSN %d of epoch %d on a link of epoch %d", b.FirstLsn, b.Epoch, hello.Epoch)
		}
		if b.FirstLsn != next {
			return fmt.Errorf("%w: it starts at LSN %d where %d was due", ErrBatch, b.FirstLsn, next)
		}
		batch := make([]received, len(recs))
		for i, rec := range recs {
			redo, err := mem.DecodeRedo(rec.Body)
			if err != nil {
				return fmt.Errorf("%w: LSN %d: %w", ErrBatch, rec.LSN, err)
			}
			batch[i] = received{lsn: rec.LSN, body: rec.Body, redo: redo}
		}
		next += uint64(len(recs))
		p.set(&p.received, next-1) // before the applier can pass it
		// Once acknowledged as received, a batch is applied whatever
		// happens to the link: the applier takes everything queued.
		queue <- batch
	}
}

// errApply marks a record this node could not apply: the link ends, and
// nothing after it is acknowledged.
var errApply = errors.New("replica: this node cannot take the primary's log")

// stopped reports whether Stop was called (a promotion or a shutdown):
// the applier then stops waiting for a full disk, and what it holds is
// lost, as in a crash of this node.
func (r *Receiver) stopped() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.closed
}

// apply applies the queued batches in order until the queue is closed,
// logging each record with the epoch that wrote it (from the sender's
// history hist). A record a full disk keeps out of the log is tried
// again until space is freed (or Stop): it was acknowledged as received,
// which a received-ack commit counts on, so it is not dropped. A record that
// fails otherwise ends the link at once (cancel), and no further
// acknowledgement goes out.
func (r *Receiver) apply(queue <-chan []received, p *progress, cancel context.CancelCauseFunc, hist []EpochStart) {
	failed := false
	stamp := ^uint64(0)
	for batch := range queue {
		if failed {
			continue // drain, so the receiver is not held up
		}
		for _, rec := range batch {
			if ep := stretchAt(hist, rec.lsn).Epoch; ep != stamp {
				r.store.SetEpoch(ep)
				stamp = ep
			}
			err := r.store.Replicate(rec.lsn, rec.body, rec.redo)
			for tries := 0; errors.Is(err, logging.ErrFull) && !r.stopped(); tries++ {
				if tries == 0 {
					r.opts.Logger.Warn("the disk is full: the records received wait to be applied until space is freed", "lsn", rec.lsn, "error", err)
				}
				time.Sleep(logging.RetryFull) // the log finds space no sooner
				err = r.store.Replicate(rec.lsn, rec.body, rec.redo)
			}
			if err != nil {
				p.mu.Lock()
				p.failed = true
				p.mu.Unlock()
				cancel(fmt.Errorf("%w: %w", errApply, err))
				failed = true
				break
			}
			p.set(&p.applied, rec.lsn)
		}
	}
}

// progress is a link's received and applied LSNs, and a poke for the
// acker when they change.
type progress struct {
	mu                sync.Mutex
	received, applied uint64
	failed            bool // applying failed: nothing more is acknowledged
	poke              chan struct{}
}

func (p *progress) set(field *uint64, lsn uint64) {
	p.mu.Lock()
	*field = lsn
	p.mu.Unlock()
	p.nudge()
}

// nudge has the acker send the progress.
func (p *progress) nudge() {
	select {
	case p.poke <- struct{}{}:
	default:
	}
}

func (p *progress) receivedLSN() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.received
}

func (p *progress) appliedLSN() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// acknowledge sends the latest progress whenever it changes (with the
// standbys behind this node, from down if set), until ctx ends; several
// changes while a send is under way go in one ack.
func (p *progress) acknowledge(ctx context.Context, st grpc.BidiStreamingServer[pb.ShipRequest, pb.ShipResponse], down func() []*pb.StandbyAck) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.poke:
		}
		var behind []*pb.StandbyAck
		if down != nil {
			behind = down()
		}
		p.mu.Lock()
		ack := &pb.ShipAck{ReceivedLsn: p.received, AppliedLsn: p.applied, Downstream: behind}
		failed := p.failed
		p.mu.Unlock()
		if failed {
			return nil
		}
		if err := st.Send(&pb.ShipResponse{Msg: &pb.ShipResponse_Ack{Ack: ack}}); err != nil {
			return err
		}
	}
}
