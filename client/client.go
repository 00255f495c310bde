// Package client is the Go client for mmdb. A Client knows several node
// addresses and sends each call to the node it believes is the primary:
//
//   - UNAVAILABLE (a node down, restarting or shutting down) moves on to the
//     next address, after a backoff that grows to Options.MaxBackoff;
//   - FAILED_PRECONDITION naming the primary (a standby refusing a write)
//     moves straight to the primary it names, unless the client found
//     that node down less than Options.MaxBackoff ago (a standby names
//     the old primary until the new one reaches it); from such a
//     standby, or one that knows no primary yet (a failover under way),
//     it moves on as after UNAVAILABLE;
//   - a standby's answer to a read names its primary: reads that moved
//     on to the standby go back to that primary once the connection to it
//     is ready and Options.MaxBackoff has passed since they left it (a
//     standby's data may lag its primary's). A Client given only
//     standbys' addresses reads from them;
//   - the context's deadline bounds everything, retries included.
//
// A certificate that fails the TLS handshake is not retried as a node
// found down, though gRPC reports it as UNAVAILABLE: a node whose
// certificate does not verify (another CA, not naming the name checked,
// expired), or one that refuses the client's certificate (none, or one
// its CA does not sign), is passed over by calls for Options.MaxBackoff,
// and the call goes on at once, without backoff, to the client's other
// nodes. A call fails, with an error that names the node's address, says
// which certificate, and wraps ErrCertificate, once every node the client
// knows has failed so, or when a standby names such a node as the primary
// a write must go to. A transaction's node found so after Begin fails
// the transaction, as a node found down does: a transaction from Begin
// fails with it, and Tx runs its function again on another node at once.
//
// The client keeps the addresses it was given (Options.Addrs) for its
// life. Those it learns from redirects it keeps while they serve: one
// that a call finds down (UNAVAILABLE) is forgotten and its connection
// closed, and when it knows more than 8, the one learned first is
// (never the one calls go to). A later redirect learns it again. Calls
// under way on a connection so closed move on as from a node found
// down, and Tx runs its function again; a Session, or a transaction
// from Begin, on it fails with UNAVAILABLE (open or begin another), as
// on a node found down. Session.Close returns within 5 seconds even
// from a node that hangs (Session.CloseContext takes a context instead):
// it then cancels the stream, and the writes still unanswered fail
// wrapping ErrUnknownOutcome.
//
// Begin runs again after UNAVAILABLE as a read does, safely: each of its
// attempts carries the same random key, so a node that opened the
// transaction of an attempt whose reply was lost answers the next with
// it rather than opening another (see Client.Begin).
//
// Every other error goes back to the caller as a gRPC status error; test it
// with status.Code. Tx runs a function in an interactive transaction and
// runs it again after ABORTED, and on another node when that is safe.
//
// A write (Insert, Upsert, Update, Delete, Commit, CreateTable,
// DropTable, CreateIndex, DropIndex, a transaction's Commit) runs again
// after UNAVAILABLE only if its request never left the client (the
// connection was never ready, or refused), or the node itself answered
// UNAVAILABLE: it refused the write and changed nothing, and it says so
// with the REFUSED detail (pb.ReasonRefused). Any other UNAVAILABLE of a
// write that left, from a connection that failed after the request
// left, or from a proxy or load balancer between the client and the
// node (which may have forwarded the write and then lost the node), may
// follow a commit whose reply was lost: the error then wraps
// ErrUnknownOutcome (its code is still UNAVAILABLE), and the caller
// decides, for instance by reading what the write would have changed.
// So does the DEADLINE_EXCEEDED or CANCELED of a write whose request
// left, whether its context ended before the node answered or the node
// answered so (a commit made but not confirmed in time).
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/internal/secure"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// Options configure a Client.
type Options struct {
	// Addrs are the nodes' host:port addresses; at least one.
	Addrs []string
	// TLS, if set, secures every connection. A node's certificate is
	// checked for the name ServerNames gives its address, else for
	// TLS.ServerName, else for the host dialled. Set Certificates (or
	// GetClientCertificate) for a node that requires client
	// certificates.
	TLS         *tls.Config
	ServerNames map[string]string
	// Token, if set, is sent with every call as a bearer token (for a
	// node with auth_token_file); it needs TLS.
	Token string
	// DialOptions are added to every connection, after those the
	// fields above make.
	DialOptions []grpc.DialOption
	// MinBackoff and MaxBackoff bound the wait between attempts after
	// UNAVAILABLE. Zero means 20ms and 2s.
	MinBackoff, MaxBackoff time.Duration
	// MaxAttempts bounds the attempts of one call (zero means 10); the
	// context's deadline bounds them too.
	MaxAttempts int
	// MaxMessageBytes is the largest reply accepted; zero means 64 MiB.
	MaxMessageBytes int
	// Logger receives retries and redirects. Nil means no output.
	Logger hclog.Logger
}

// Client is safe for concurrent use.
type Client struct {
	opts Options
	log  hclog.Logger

	mu sync.Mutex
	// addrs are the known nodes: Options.Addrs, then those learned
	// from redirects, oldest first: at most maxLearned (forget).
	addrs  []string
	seeds  int // how many of addrs are Options.Addrs
	cur    int // index in addrs of the node calls go to
	conns  map[string]*grpc.ClientConn
	closed bool // Close was called
	// away holds, for each node calls moved on from, when reads may go
	// back to it (goBack).
	away map[string]time.Time
	// down holds, for each node calls moved on from after UNAVAILABLE,
	// until when a redirect to it is not followed (follow).
	down map[string]time.Time
	// certs holds, for each node of down that is there because its
	// certificate failed the TLS handshake, that failure (certFailure):
	// calls pass over it, and one redirected to it fails so.
	certs map[string]error
}

// New returns a Client. It connects lazily, on the first call.
func New(opts Options) (*Client, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("client: no addresses")
	}
	if opts.Token != "" && opts.TLS == nil {
		return nil, errors.New("client: a token is sent only over TLS; set TLS too")
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 20 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 10
	}
	if opts.MaxMessageBytes <= 0 {
		opts.MaxMessageBytes = 64 << 20
	}
	log := opts.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Client{opts: opts, log: log, addrs: append([]string(nil), opts.Addrs...), seeds: len(opts.Addrs),
		conns: map[string]*grpc.ClientConn{}, away: map[string]time.Time{}, down: map[string]time.Time{}, certs: map[string]error{}}, nil
}

// maxLearned bounds the addresses a Client keeps of those redirects
// named: a long-lived client that sees failovers to ever new addresses
// would otherwise keep a connection to each, and try them all.
const maxLearned = 8

// ErrClosed is the error of a call made after Close.
var ErrClosed = errors.New("client: closed")

// Close closes every connection; calls made after it fail with
// ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for addr, conn := range c.conns {
		if err := conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("client: close connection to %s: %w", addr, err))
		}
	}
	c.conns = map[string]*grpc.ClientConn{}
	return errors.Join(errs...)
}

// Addr returns the address calls go to now.
func (c *Client) Addr() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.addrs[c.cur]
}

// conn returns the connection to the current node, dialing it if needed,
// passing over the nodes whose certificate failed (certFailedLocked)
// while the client knows another.
func (c *Client) conn() (*grpc.ClientConn, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for range c.addrs {
		if c.certFailedLocked(c.addrs[c.cur]) == nil {
			break
		}
		c.cur = (c.cur + 1) % len(c.addrs)
	}
	addr := c.addrs[c.cur]
	conn, err := c.dial(addr)
	return conn, addr, err
}

// dial returns the connection to addr, making it if needed; c.mu is held.
func (c *Client) dial(addr string) (*grpc.ClientConn, error) {
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	if c.closed {
		return nil, ErrClosed // a connection made now would never be closed
	}
	opts := append([]grpc.DialOption{
		c.transport(addr),
		grpc.WithInitialWindowSize(pb.WindowBytes), grpc.WithInitialConnWindowSize(pb.ConnWindowBytes),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(c.opts.MaxMessageBytes)),
		grpc.WithStatsHandler(traceHandler{}),
	}, c.opts.DialOptions...)
	if c.opts.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(secure.Bearer(c.opts.Token)))
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: connect to %s: %w", addr, err)
	}
	c.conns[addr] = conn
	return conn, nil
}

// transport is the credentials to dial addr with: TLS for the server
// name of addr, or plaintext.
func (c *Client) transport(addr string) grpc.DialOption {
	if c.opts.TLS == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	cfg := c.opts.TLS
	if name, ok := c.opts.ServerNames[addr]; ok {
		cfg = cfg.Clone()
		cfg.ServerName = name
	}
	return grpc.WithTransportCredentials(secure.Checked(cfg))
}

// moveOn points calls at the node after from, unless another call moved
// them already. Reads go back to from no sooner than MaxBackoff later;
// when from is down (it answered UNAVAILABLE, or could not be reached),
// neither does a redirect (follow), and a from that a redirect taught
// is forgotten.
func (c *Client) moveOn(from string, down bool) {
	c.mu.Lock()
	now := time.Now()
	for _, m := range []map[string]time.Time{c.away, c.down} {
		for a, until := range m {
			if now.After(until) { // as good as absent: not to grow with every address seen
				delete(m, a)
			}
		}
	}
	for a := range c.certs {
		if _, ok := c.down[a]; !ok {
			delete(c.certs, a)
		}
	}
	c.away[from] = now.Add(c.opts.MaxBackoff)
	if down {
		c.down[from] = c.away[from]
	}
	var drop *grpc.ClientConn
	switch i := slices.Index(c.addrs, from); {
	case i < 0: // another call forgot it
	case down && i >= c.seeds:
		drop = c.forgetLocked(i) // calls go to the node after it
	case c.cur == i:
		c.cur = (c.cur + 1) % len(c.addrs)
	}
	c.mu.Unlock()
	c.closeConn(from, drop)
}

// certFailed notes that the certificate of the node at addr failed the
// TLS handshake (failure, from certFailure): for MaxBackoff calls pass
// over it and no redirect leads to it, as after UNAVAILABLE (moveOn).
// It reports whether the client knows a node whose certificate has not
// failed so, which calls go to.
func (c *Client) certFailed(addr string, failure error) (left bool) {
	c.moveOn(addr, true)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.certs[addr] = failure
	return slices.ContainsFunc(c.addrs, func(a string) bool { return c.certFailedLocked(a) == nil })
}

// certFailedLocked returns the failure of the certificate of the node at
// addr, if it failed less than MaxBackoff ago (certFailed); c.mu is held.
func (c *Client) certFailedLocked(addr string) error {
	if err := c.certs[addr]; err != nil && time.Now().Before(c.down[addr]) {
		return err // the clock read only then: conn asks on every call
	}
	return nil
}

// certFailedAt is certFailedLocked for a caller not holding c.mu.
func (c *Client) certFailedAt(addr string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.certFailedLocked(addr)
}

// forgetLocked drops the learned address addrs[i] and returns its
// connection, if any, for the caller to close once c.mu is released.
// Calls that went to it go to the address after it. c.mu is held.
func (c *Client) forgetLocked(i int) *grpc.ClientConn {
	addr := c.addrs[i]
	c.addrs = slices.Delete(c.addrs, i, i+1)
	if c.cur > i {
		c.cur--
	}
	c.cur %= len(c.addrs)
	conn := c.conns[addr]
	delete(c.conns, addr)
	c.log.Debug("forgot a learned address", "addr", addr)
	return conn
}

// closeConn closes the connection to addr that forgetLocked dropped; nil
// is none.
func (c *Client) closeConn(addr string, conn *grpc.ClientConn) {
	if conn == nil {
		return
	}
	if err := conn.Close(); err != nil {
		c.log.Debug("closing the connection to a forgotten address", "addr", addr, "error", err)
	}
}

// closedUnder returns err as UNAVAILABLE when it is the CANCELED of a
// call whose connection the client closed under it, forgetting its node
// (moveOn, forgetLocked), rather than of the call's own context: the
// caller moves on, as from a node found down.
func (c *Client) closedUnder(ctx context.Context, conn *grpc.ClientConn, err error) error {
	if status.Code(err) != codes.Canceled || ctx.Err() != nil || conn.GetState() != connectivity.Shutdown {
		return err
	}
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if closed {
		return err
	}
	return status.Errorf(codes.Unavailable, "client: the connection closed under the call, its node found down: %v", err)
}

// goBack points calls back at primary, which the standby at from named
// in its answer to a read (pb.HeaderPrimary): reads that moved on to a
// standby while the primary was out of reach would otherwise stay there,
// on data that may lag, until a write's redirect. It goes back once the
// connection to primary is ready (a read never waits for it) and
// MaxBackoff has passed since calls moved on from it. Only a node the
// client knows is gone back to: a client given only a standby's address
// reads from that standby.
func (c *Client) goBack(primary, from string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := slices.Index(c.addrs, primary)
	if i < 0 || primary == from || c.addrs[c.cur] != from || time.Now().Before(c.away[primary]) {
		return
	}
	conn, err := c.dial(primary)
	if err != nil {
		return // the next call to it says why
	}
	switch conn.GetState() {
	case connectivity.Ready:
		c.log.Debug("reads go back to the primary", "from", from, "primary", primary)
		c.cur = i
	case connectivity.Idle:
		conn.Connect() // for a later read to find ready
	}
}

// follow points calls at the primary a redirect named, learning its
// address if it is new, and reports true; unless calls moved on from
// that node because it was down less than MaxBackoff ago: a standby names
// the old primary until the new one reaches it (or for good, if it
// cannot follow the new one), and following it would take calls back
// and forth between the two, never to the new primary listed after them.
// The caller then moves on, as from a standby that names no primary.
func (c *Client) follow(primary string) bool {
	c.mu.Lock()
	if time.Now().Before(c.down[primary]) {
		c.mu.Unlock()
		return false
	}
	if i := slices.Index(c.addrs, primary); i >= 0 {
		c.cur = i
		c.mu.Unlock()
		return true
	}
	c.addrs = append(c.addrs, primary)
	c.cur = len(c.addrs) - 1
	var old string
	var drop *grpc.ClientConn
	if len(c.addrs)-c.seeds > maxLearned {
		old = c.addrs[c.seeds]
		drop = c.forgetLocked(c.seeds) // the first learned; not primary, the last
	}
	c.mu.Unlock()
	c.closeConn(old, drop)
	return true
}

// primaryIn says whether err is a NOT_PRIMARY error, and returns the
// primary it names (empty when the node knows none).
func primaryIn(err error) (primary string, notPrimary bool) {
	if status.Code(err) != codes.FailedPrecondition {
		return "", false
	}
	info := detail(err, pb.ReasonNotPrimary)
	return info.GetMetadata()[pb.MetadataPrimary], info != nil
}

// detail returns err's ErrorInfo detail of one of reasons (in domain
// pb.ErrorDomain), or nil.
func detail(err error, reasons ...string) *errdetails.ErrorInfo {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == pb.ErrorDomain && slices.Contains(reasons, info.GetReason()) {
			return info
		}
	}
	return nil
}

// A call is a read or a write: a read runs again after any UNAVAILABLE,
// and a standby's answer to it may send calls back to the primary
// (goBack); a write runs again only when it never left the client, or
// the node refused it (callTrace.outcome).
const (
	read  = false
	write = true
)

// call runs fn against the current node, moving on after UNAVAILABLE and
// following redirects, until it succeeds, fails otherwise, runs out of
// attempts, or ctx ends. fn makes its calls with the context it is
// given. A write that failed with UNAVAILABLE after it left the client,
// other than the node's refusal (pb.ReasonRefused), is not run again: its
// error wraps ErrUnknownOutcome.
func (c *Client) call(ctx context.Context, isWrite bool, fn func(ctx context.Context, conn *grpc.ClientConn, addr string) error) error {
	backoff := c.opts.MinBackoff
	var err error
	for attempt := 1; ; attempt++ {
		var conn *grpc.ClientConn
		var addr string
		if conn, addr, err = c.conn(); err != nil {
			return err
		}
		actx, tr := traced(ctx)
		if err = c.closedUnder(ctx, conn, fn(actx, conn, addr)); isWrite {
			err = tr.outcome(err)
		}
		if err == nil {
			if p := tr.primary.Load(); p != nil && !isWrite {
				c.goBack(*p, addr)
			}
			return nil
		}
		if secure.IsCertError(err) {
			// Not tried again for a while (every attempt would fail alike
			// until an operator changes a certificate), but another node
			// may hold a good certificate: it is tried at once.
			c.log.Warn("a node's certificate failed the TLS handshake", "addr", addr, "error", err)
			// A write that left (a refusal under TLS 1.3 comes after the
			// handshake the client saw succeed) still runs nowhere else.
			unknown := errors.Is(err, ErrUnknownOutcome)
			err = certFailure(addr, err)
			if !c.certFailed(addr, err) || unknown || attempt >= c.opts.MaxAttempts || ctx.Err() != nil {
				return err
			}
			continue
		}
		if attempt >= c.opts.MaxAttempts || ctx.Err() != nil || errors.Is(err, ErrUnknownOutcome) {
			return err
		}
		primary, notPrimary := primaryIn(err)
		if failed := c.certFailedAt(primary); failed != nil {
			return failed // the only node that takes the call
		}
		if primary != "" && c.follow(primary) {
			c.log.Debug("following the primary", "from", addr, "primary", primary)
			continue
		}
		unavailable := status.Code(err) == codes.Unavailable
		if !unavailable && !notPrimary {
			return err
		}
		c.log.Debug("node unavailable; trying the next", "addr", addr, "attempt", attempt, "error", err)
		c.moveOn(addr, unavailable)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return err
		}
		backoff = min(2*backoff, c.opts.MaxBackoff)
	}
}

// ErrCertificate is wrapped by the error of a call that a certificate
// failed in the TLS handshake: the node's did not verify (another CA,
// not naming the name checked, expired), or the node refused the
// client's (none, or one its CA does not sign). gRPC reports it as
// UNAVAILABLE, and the error's code stays so, but the call is not run
// again on that node (only on the client's others): every attempt there
// would fail alike until an operator changes a certificate or a CA file.
var ErrCertificate = errors.New("client: a certificate failed the TLS handshake")

// certFailure returns err, the failure of a call to the node at addr
// that a certificate failed (secure.IsCertError), wrapping
// ErrCertificate.
func certFailure(addr string, err error) error {
	return fmt.Errorf("%w with %s, not tried again: %w", ErrCertificate, addr, err)
}

func (c *Client) db(fn func(context.Context, pb.DatabaseServiceClient) error) func(context.Context, *grpc.ClientConn, string) error {
	return func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
		return fn(ctx, pb.NewDatabaseServiceClient(conn))
	}
}

// ErrUnknownOutcome is wrapped by the error of a write that failed after
// its request left the client and before the node answered: with an
// UNAVAILABLE that is not the node's refusal (its connection failed, or
// a proxy or load balancer between them answered it, having perhaps
// forwarded the write and lost the node: the node marks its own
// UNAVAILABLE with pb.ReasonRefused), or with DEADLINE_EXCEEDED or
// CANCELED when its context ended while it waited.
// So is a DEADLINE_EXCEEDED or CANCELED the node itself answered to a
// write that reached it: a node answers so, a margin before the
// deadline, a commit it made in memory that its durability level or its
// standbys did not confirm in time (SPEC 6). So is an error with the
// NOT_DURABLE detail (pb.ReasonNotDurable: a commit made in memory whose
// record a full disk or a failed log keeps out of the log, its code
// RESOURCE_EXHAUSTED or INTERNAL). The node may have committed it, so the client does not run it again,
// which could apply it twice or fail on its own first run. Read to find
// out. The error's gRPC code stays what it was. A write whose context
// ended before it left gets the plain DEADLINE_EXCEEDED or CANCELED: it
// changed nothing.
var ErrUnknownOutcome = errors.New("client: the write may or may not have committed")

type unknownOutcome struct{ err error }

func (e *unknownOutcome) Error() string   { return ErrUnknownOutcome.Error() + ": " + e.err.Error() }
func (e *unknownOutcome) Unwrap() []error { return []error{ErrUnknownOutcome, e.err} }

// callTrace records how far one call got, from its gRPC events (traceHandler).
type callTrace struct {
	sent atomic.Bool // its request went to the transport
	// primary is the primary a standby's answer named (pb.HeaderPrimary).
	primary atomic.Pointer[string]
}

type traceKey struct{}

// traced returns ctx with a new callTrace for the call made with it.
func traced(ctx context.Context) (context.Context, *callTrace) {
	tr := &callTrace{}
	return context.WithValue(ctx, traceKey{}, tr), tr
}

// outcome returns err, the result of the call tr traced, or, if the call
// ended after its request left with an UNAVAILABLE that is not the
// node's refusal (refused), or with a deadline or a cancel, whoever
// answered it (the client's context that ended the wait, or the node,
// whose DEADLINE_EXCEEDED may be that of a commit it made but could not
// confirm in time), an error wrapping both err and ErrUnknownOutcome.
func (tr *callTrace) outcome(err error) error {
	if !tr.sent.Load() {
		return err
	}
	if status.Code(err) == codes.Unavailable && !refused(err) || unconfirmed(err) {
		return &unknownOutcome{err}
	}
	return err
}

// refused says whether err is the node's refusal of a request it did
// nothing of: an UNAVAILABLE with the REFUSED detail (pb.ReasonRefused).
// An UNAVAILABLE without it came from the connection that failed under
// the call, or from a proxy or load balancer between the client and the
// node, which may have forwarded the request before it lost the node.
func refused(err error) bool {
	return status.Code(err) == codes.Unavailable && detail(err, pb.ReasonRefused) != nil
}

// unconfirmed says whether err, the error of a write that reached the
// node, may be that of a commit the node made but did not confirm: a
// DEADLINE_EXCEEDED or CANCELED (the wait ended, whoever ended it), or
// an error with the NOT_DURABLE detail (the log keeps its record out,
// pb.ReasonNotDurable) or the UNCONFIRMED one (its standbys did not
// confirm it: the node stopped shipping its log, pb.ReasonUnconfirmed).
func unconfirmed(err error) bool {
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return detail(err, pb.ReasonNotDurable, pb.ReasonUnconfirmed) != nil
}

// traceHandler is a stats.Handler that fills in the callTrace of each
// call made with a traced context.
type traceHandler struct{}

func (traceHandler) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }

func (traceHandler) HandleRPC(ctx context.Context, s stats.RPCStats) {
	tr, ok := ctx.Value(traceKey{}).(*callTrace)
	if !ok {
		return
	}
	switch s := s.(type) {
	case *stats.OutPayload:
		tr.sent.Store(true)
	case *stats.InHeader:
		if p := s.Header.Get(pb.HeaderPrimary); len(p) > 0 {
			tr.primary.Store(&p[0])
		}
	}
}

func (traceHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (traceHandler) HandleConn(context.Context, stats.ConnStats)                       {}
