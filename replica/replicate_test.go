package replica_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/banktest"
	"github.com/mmdb/mmdb/internal/digest"
	"github.com/mmdb/mmdb/internal/faultproxy"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// standby is a standby store served over ReplicationService on loopback.
type standby struct {
	store  *durability.Store
	epochs *replica.Epochs
	fs     *vfs.MemFS
	addr   string
	srv    *grpc.Server
	recv   *replica.Receiver
}

func newStandby(t *testing.T, opts durability.Options, peers ...string) *standby {
	t.Helper()
	return newStandbyAs(t, "b", opts, peers...)
}

// newStandbyAs is newStandby for node name.
func newStandbyAs(t *testing.T, name string, opts durability.Options, peers ...string) *standby {
	t.Helper()
	opts.Standby = true
	st, err := durability.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	ep := memEpochs(t)
	recv := replica.NewReceiver(st, replica.ReceiverOptions{Node: name, Peers: peers, Epochs: ep})
	pb.RegisterReplicationServiceServer(srv, recv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	s := &standby{store: st, epochs: ep, addr: lis.Addr().String(), srv: srv, recv: recv}
	s.fs, _ = opts.FS.(*vfs.MemFS)
	t.Cleanup(func() {
		srv.Stop()
		// A test may have crashed the standby's file system, or filled it.
		if err := st.Close(); err != nil && !errors.Is(err, vfs.ErrCrashed) && !errors.Is(err, syscall.ENOSPC) {
			t.Error(err)
		}
	})
	return s
}

// memEpochs is a history kept in memory, at epoch 0.
func memEpochs(t *testing.T) *replica.Epochs {
	t.Helper()
	e, err := replica.OpenEpochs(nil, "")
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newPrimary(t *testing.T, opts durability.Options) *durability.Store {
	t.Helper()
	if opts.RingBytes == 0 {
		opts.RingBytes = 64 << 20
	}
	return openStore(t, opts)
}

// openStore opens a store of opts, closed when the test ends.
func openStore(t *testing.T, opts durability.Options) *durability.Store {
	t.Helper()
	st, err := durability.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return st
}

func newSender(t *testing.T, st *durability.Store, opts replica.SenderOptions) *replica.Sender {
	t.Helper()
	if opts.Node == "" {
		opts.Node, opts.Addr = "a", "127.0.0.1:1"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Epochs == nil {
		opts.Epochs = memEpochs(t)
	}
	s, err := replica.NewSender(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// caughtUp waits until the standby has applied the primary's last LSN.
func caughtUp(t *testing.T, primary, standby *durability.Store) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for standby.DB().LastLSN() < primary.DB().LastLSN() {
		if time.Now().After(deadline) {
			t.Fatalf("the standby is at LSN %d, the primary at %d", standby.DB().LastLSN(), primary.DB().LastLSN())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func sameData(t *testing.T, a, b *durability.Store) {
	t.Helper()
	da, err := digest.Of(a.DB())
	if err != nil {
		t.Fatal(err)
	}
	db, err := digest.Of(b.DB())
	if err != nil {
		t.Fatal(err)
	}
	if !da.Equal(db) {
		t.Fatalf("primary %s, standby %s", da, db)
	}
}

// TestAppliedAck: under applied-ack every acknowledged commit is visible
// on the standby when the commit returns; the standby ends with the same
// data and refuses writes naming the primary.
func TestAppliedAck(t *testing.T) {
	primary := newPrimary(t, durability.Options{FS: vfs.NewMemFS(), Level: durability.FsyncLog, Dirs: []string{"/a/log"}, SegmentSize: 1 << 20})
	sb := newStandby(t, durability.Options{FS: vfs.NewMemFS(), Level: durability.FsyncLog, Dirs: []string{"/b/log"}, SegmentSize: 1 << 20}, "a")
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}, Mode: replica.AppliedAck, Quorum: 1})
	ctx := context.Background()
	wait := func(lsn uint64) error {
		if err := primary.Wait(ctx, lsn, durability.FsyncLog); err != nil {
			return err
		}
		if degraded, err := snd.Wait(ctx, lsn, -1); err != nil || degraded {
			return errors.Join(err, errors.New("degraded"))
		}
		if got := sb.store.DB().LastLSN(); got < lsn {
			t.Errorf("applied-ack returned for LSN %d with the standby at %d", lsn, got)
		}
		return nil
	}
	bank := banktest.Setup(t, primary.DB(), wait)
	acked := banktest.Run(primary.DB(), bank, 0, 8, 50, wait, nil)
	banktest.Check(t, sb.store.DB(), acked, "standby")
	sameData(t, primary, sb.store)

	_, err := banktest.Of(t, sb.store.DB()).Transfer(sb.store.DB(), 0, 1, 1, "on-standby")
	if !errors.Is(err, durability.ErrStandby) || !strings.Contains(err.Error(), "a at 127.0.0.1:1") {
		t.Fatalf("a write on the standby: %v", err)
	}
	st := snd.Standbys()
	if len(st) != 1 || st[0].State != replica.StateStreaming || st[0].Applied != primary.DB().LastLSN() || st[0].LagRecords != 0 || st[0].Opened != 1 {
		t.Fatalf("standby status %+v at LSN %d", st, primary.DB().LastLSN())
	}

	// The standby logs what it applies at its own level: after a crash of
	// its machine it has a consistent prefix of the primary's commits
	// (what it had synced), and after a clean stop all of them.
	sb.srv.Stop()
	crashed := sb.fs.Crash(nil)
	again, err := durability.Open(durability.Options{FS: crashed, Level: durability.FsyncLog, Dirs: []string{"/b/log"}, SegmentSize: 1 << 20, Standby: true})
	if err != nil {
		t.Fatal(err)
	}
	banktest.Check(t, again.DB(), nil, "standby after a crash")
	if again.DB().LastLSN() > primary.DB().LastLSN() {
		t.Fatalf("the standby recovered LSN %d, past the primary's %d", again.DB().LastLSN(), primary.DB().LastLSN())
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestStandbyKeepsWhatItApplied: a standby stopped cleanly recovers
// everything it applied from its own log.
func TestStandbyKeepsWhatItApplied(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	fs := vfs.NewMemFS()
	opts := durability.Options{FS: fs, Level: durability.MmapLog, Dirs: []string{"/b/log"}, SegmentSize: 1 << 20, Standby: true}
	st, err := durability.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	addr, stop := grpctest.Serve(t, func(srv *grpc.Server) {
		pb.RegisterReplicationServiceServer(srv, replica.NewReceiver(st, replica.ReceiverOptions{Node: "b", Peers: []string{"a"}, Epochs: memEpochs(t)}))
	})
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: addr}}, Mode: replica.AppliedAck, Quorum: 1})
	bank := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	banktest.Run(primary.DB(), bank, 0, 4, 50, func(uint64) error { return nil }, nil)
	caughtUp(t, primary, st)
	snd.Close()
	stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := durability.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	sameData(t, primary, again)
}

// TestLinkCutsAndResumes: a link cut again and again while commits go on
// resumes from the standby's applied LSN each time, and the standby ends
// with the primary's data.
func TestLinkCutsAndResumes(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	proxy := faultproxy.New(t, sb.addr)
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: proxy.Addr()}}, Mode: replica.ReceivedAck, Quorum: 1})
	ctx := context.Background()
	wait := func(lsn uint64) error {
		_, err := snd.Wait(ctx, lsn, -1)
		return err
	}
	bank := banktest.Setup(t, primary.DB(), wait)
	done := make(chan map[string]bool)
	go func() { done <- banktest.Run(primary.DB(), bank, 0, 4, 300, func(uint64) error { return nil }, nil) }()
	for range 5 {
		time.Sleep(20 * time.Millisecond)
		proxy.Cut()
	}
	acked := <-done
	caughtUp(t, primary, sb.store)
	banktest.Check(t, sb.store.DB(), acked, "standby")
	sameData(t, primary, sb.store)
	if proxy.Cuts() < 5 {
		t.Fatalf("%d cuts", proxy.Cuts())
	}
}

// TestLinkStaysUp: a link under a steady stream of commits is opened once
// and never breaks by itself.
func TestLinkStaysUp(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}})
	bank := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	banktest.Run(primary.DB(), bank, 0, 8, 500, func(uint64) error { return nil }, nil)
	caughtUp(t, primary, sb.store)
	deadline := time.Now().Add(10 * time.Second)
	for snd.Standbys()[0].Applied < primary.DB().LastLSN() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if st := snd.Standbys()[0]; st.Opened != 1 || st.State != replica.StateStreaming {
		t.Fatalf("the link: %+v", st)
	}
}

// TestDegradeAndResume: with on_sync_timeout = degrade, a commit whose
// standby does not answer returns degraded after sync_timeout, the next
// ones at once, and commits wait again once the standby is back and has
// caught up. With block, a commit waits until its deadline.
func TestDegradeAndResume(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	proxy := faultproxy.New(t, sb.addr)
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: proxy.Addr()}}, Mode: replica.AppliedAck, Quorum: 1, Timeout: 200 * time.Millisecond})
	ctx := context.Background()
	bank := banktest.Setup(t, primary.DB(), func(lsn uint64) error {
		_, err := snd.Wait(ctx, lsn, -1)
		return err
	})
	proxy.Stall(true) // the standby's acknowledgements are held back
	lsn, err := bank.Transfer(primary.DB(), 0, 1, 1, "t1")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	degraded, err := snd.Wait(ctx, lsn, -1)
	if err != nil || !degraded || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("a commit without its standby: degraded %v, %v after %s", degraded, err, time.Since(start))
	}
	if !snd.Degraded() || snd.Standbys()[0].State != replica.StateDegraded {
		t.Fatalf("not degraded: %+v", snd.Standbys())
	}
	lsn, _ = bank.Transfer(primary.DB(), 0, 1, 1, "t2")
	start = time.Now()
	if degraded, err := snd.Wait(ctx, lsn, -1); err != nil || !degraded || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("a commit while degraded: degraded %v, %v after %s", degraded, err, time.Since(start))
	}
	caughtUp(t, primary, sb.store) // it applies; the primary does not hear of it
	if !snd.Degraded() {
		t.Fatal("no longer degraded while the acknowledgements are held back")
	}
	proxy.Stall(false)
	deadline := time.Now().Add(10 * time.Second)
	for snd.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("still degraded after the standby caught up")
		}
		time.Sleep(5 * time.Millisecond)
	}
	lsn, _ = bank.Transfer(primary.DB(), 0, 1, 1, "t3")
	if degraded, err := snd.Wait(ctx, lsn, -1); err != nil || degraded || sb.store.DB().LastLSN() < lsn {
		t.Fatalf("after the standby is back: degraded %v, %v", degraded, err)
	}
}

// TestSetSync: new sync settings reach the commits that wait now. A
// commit that blocks for an absent standby returns when the node's mode
// becomes async; one that asked for applied-ack itself goes on waiting;
// back to applied-ack with degrade, a commit degrades after the new
// timeout.
func TestSetSync(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: "127.0.0.1:1"}}, Mode: replica.AppliedAck, Quorum: 1, Block: true})
	tbl := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	transfer := func(name string) uint64 {
		lsn, err := tbl.Transfer(primary.DB(), 0, 1, 1, name)
		if err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	type result struct {
		degraded bool
		err      error
	}
	lsn := transfer("t1")
	blocked := make(chan result, 1)
	go func() {
		degraded, err := snd.Wait(context.Background(), lsn, -1)
		blocked <- result{degraded, err}
	}()
	select {
	case r := <-blocked:
		t.Fatalf("a commit without its standby returned: %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
	snd.SetSync(replica.Async, 1, nil, time.Second, true)
	select {
	case r := <-blocked:
		if r.err != nil || r.degraded {
			t.Fatalf("a blocked commit once the node is async: %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked commit still waits after the node became async")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if degraded, err := snd.Wait(ctx, transfer("t2"), replica.AppliedAck); !errors.Is(err, replica.ErrUnconfirmed) || degraded {
		t.Fatalf("a commit that asked for applied-ack on an async node: degraded %v, %v", degraded, err)
	}
	snd.SetSync(replica.AppliedAck, 1, nil, 50*time.Millisecond, false)
	start := time.Now()
	if degraded, err := snd.Wait(context.Background(), transfer("t3"), -1); err != nil || !degraded || time.Since(start) < 50*time.Millisecond {
		t.Fatalf("a commit after the switch to applied-ack and degrade: degraded %v, %v after %s", degraded, err, time.Since(start))
	}
	if !snd.Degraded() {
		t.Fatal("not degraded")
	}
	snd.SetSync(replica.Async, 1, nil, 50*time.Millisecond, false)
	if snd.Degraded() {
		t.Fatal("still degraded with nothing to wait for")
	}

	// wait starts a commit waiting for the node's mode, and changes the
	// settings after 50 ms.
	n := 3
	wait := func(ctx context.Context, change func()) (result, time.Duration) {
		n++
		lsn := transfer(fmt.Sprint("t", n))
		done := make(chan result, 1)
		start := time.Now()
		go func() {
			degraded, err := snd.Wait(ctx, lsn, -1)
			done <- result{degraded, err}
		}()
		time.Sleep(50 * time.Millisecond)
		change()
		r := <-done
		return r, time.Since(start)
	}
	// From degrade to block while a commit waits: it does not degrade
	// when its old timeout passes, but waits until its deadline.
	snd.SetSync(replica.AppliedAck, 1, nil, 300*time.Millisecond, false)
	ctx, cancel = context.WithTimeout(context.Background(), 800*time.Millisecond)
	defer cancel()
	r, took := wait(ctx, func() { snd.SetSync(replica.AppliedAck, 1, nil, 300*time.Millisecond, true) })
	if !errors.Is(r.err, replica.ErrUnconfirmed) || r.degraded || took < 700*time.Millisecond || snd.Degraded() {
		t.Fatalf("a commit whose node went from degrade to block: %+v after %s, node degraded %v", r, took, snd.Degraded())
	}
	// A shorter timeout reaches a commit that waits already.
	snd.SetSync(replica.AppliedAck, 1, nil, 10*time.Second, false)
	r, took = wait(context.Background(), func() { snd.SetSync(replica.AppliedAck, 1, nil, 100*time.Millisecond, false) })
	if r.err != nil || !r.degraded || took > 5*time.Second {
		t.Fatalf("a commit whose timeout went from 10 s to 100 ms: %+v after %s", r, took)
	}
	// A quorum of none releases a blocked commit.
	snd.SetSync(replica.AppliedAck, 1, nil, time.Second, true)
	r, took = wait(context.Background(), func() { snd.SetSync(replica.AppliedAck, 0, nil, time.Second, true) })
	if r.err != nil || r.degraded || took > 5*time.Second {
		t.Fatalf("a blocked commit once sync_quorum is 0: %+v after %s", r, took)
	}
}

// TestSetPeers: peers added to a running Sender are shipped to, and
// answer for the commits that wait; a peer removed is shipped to no
// more, and no longer answers; a standby that no longer takes log from
// the sender ends its link and refuses it, until it takes it again.
func TestSetPeers(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	dead := replica.Peer{Name: "b", Addr: "127.0.0.1:1"}
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{dead}, Mode: replica.AppliedAck, Quorum: 1, Block: true})
	tbl := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	n := 0
	transfer := func() uint64 {
		n++
		lsn, err := tbl.Transfer(primary.DB(), 0, 1, 1, fmt.Sprint("t", n))
		if err != nil {
			t.Fatal(err)
		}
		return lsn
	}
	names := func() []string {
		var out []string
		for _, st := range snd.Standbys() {
			out = append(out, st.Name+" "+st.State)
		}
		return out
	}
	blocked := make(chan error, 1)
	lsn := transfer()
	go func() {
		_, err := snd.Wait(context.Background(), lsn, -1)
		blocked <- err
	}()
	select {
	case err := <-blocked:
		t.Fatalf("a commit without its standby returned: %v", err)
	case <-time.After(100 * time.Millisecond):
	}

	c := newStandbyAs(t, "c", durability.Options{Level: durability.NoLog}, "a")
	cp := replica.Peer{Name: "c", Addr: c.addr}
	if added, removed := snd.SetPeers([]replica.Peer{dead, cp}); !slices.Equal(added, []string{"c"}) || removed != nil {
		t.Fatalf("adding c: added %q, removed %q", added, removed)
	}
	select {
	case err := <-blocked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("the commit still waits once c is a peer: %q", names())
	}
	if got := c.store.DB().LastLSN(); got < lsn {
		t.Fatalf("the commit at LSN %d returned with c at %d", lsn, got)
	}
	if added, removed := snd.SetPeers([]replica.Peer{cp}); added != nil || !slices.Equal(removed, []string{"b"}) {
		t.Fatalf("removing b: added %q, removed %q", added, removed)
	}
	if got := names(); !slices.Equal(got, []string{"c streaming"}) {
		t.Fatalf("standbys without b: %q", got)
	}

	// Gone: c is not shipped to, and a commit has none to answer it.
	if added, removed := snd.SetPeers(nil); added != nil || !slices.Equal(removed, []string{"c"}) || len(snd.Standbys()) != 0 {
		t.Fatalf("removing c: added %q, removed %q, standbys %q", added, removed, names())
	}
	at := c.store.DB().LastLSN()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := snd.Wait(ctx, transfer(), -1); !errors.Is(err, replica.ErrUnconfirmed) {
		t.Fatalf("a commit with no peer: %v", err)
	}
	if got := c.store.DB().LastLSN(); got != at {
		t.Fatalf("c went from LSN %d to %d once it was no peer", at, got)
	}
	// Back: c resumes from what it applied.
	snd.SetPeers([]replica.Peer{cp})
	caughtUp(t, primary, c.store)

	// c moves: a node of the same name at another address (here, one
	// that holds nothing yet) is shipped to from there, and the old
	// address no more.
	moved := newStandbyAs(t, "c", durability.Options{Level: durability.NoLog}, "a")
	if added, removed := snd.SetPeers([]replica.Peer{{Name: "c", Addr: moved.addr}}); !slices.Equal(added, []string{"c"}) || !slices.Equal(removed, []string{"c"}) {
		t.Fatalf("moving c: added %q, removed %q", added, removed)
	}
	at = c.store.DB().LastLSN()
	if _, err := snd.Wait(context.Background(), transfer(), -1); err != nil {
		t.Fatal(err)
	}
	caughtUp(t, primary, moved.store)
	if got := c.store.DB().LastLSN(); got != at {
		t.Fatalf("c's old address went from LSN %d to %d once c moved", at, got)
	}
	snd.SetPeers([]replica.Peer{cp})
	caughtUp(t, primary, c.store)

	// c takes log from no one: the link ends, and is refused.
	c.recv.SetPeers(nil)
	refused := func() bool {
		st := snd.Standbys()
		return len(st) == 1 && st[0].State == replica.StateRefused && strings.Contains(st[0].Reason, `"a" is not a peer of c`)
	}
	for deadline := time.Now().Add(20 * time.Second); !refused(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("c still takes a's log: %+v", snd.Standbys())
		}
	}
	at = c.store.DB().LastLSN()
	transfer()
	time.Sleep(100 * time.Millisecond)
	if got := c.store.DB().LastLSN(); got != at {
		t.Fatalf("c went from LSN %d to %d once a was no peer of it", at, got)
	}
	c.recv.SetPeers([]string{"a"})
	caughtUp(t, primary, c.store)
	sameData(t, primary, c.store)
}

// TestBlockUntilDeadline: with on_sync_timeout = block a commit whose
// standby is away waits until its context ends and says it is
// unconfirmed.
func TestBlockUntilDeadline(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: "127.0.0.1:1"}}, Mode: replica.ReceivedAck, Quorum: 1, Timeout: 10 * time.Millisecond, Block: true})
	tbl := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	lsn, err := tbl.Transfer(primary.DB(), 0, 1, 1, "t")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	degraded, err := snd.Wait(ctx, lsn, -1)
	if !errors.Is(err, replica.ErrUnconfirmed) || !errors.Is(err, context.DeadlineExceeded) || degraded {
		t.Fatalf("blocked commit: degraded %v, %v", degraded, err)
	}
	if st := snd.Standbys()[0].State; st != replica.StateDisconnected && st != replica.StateConnecting {
		t.Fatalf("an unreachable standby is %q", st)
	}
}

// TestNeedsImage: a standby further behind than the primary's ring
// reaches is not sent a gap: its link says it needs an image.
func TestNeedsImage(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog, RingBytes: 200})
	bank := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	banktest.Run(primary.DB(), bank, 0, 2, 20, func(uint64) error { return nil }, nil)
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}})
	deadline := time.Now().Add(10 * time.Second)
	for snd.Standbys()[0].State != replica.StateNeedsImage {
		if time.Now().After(deadline) {
			t.Fatalf("standby %+v", snd.Standbys())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if sb.store.DB().LastLSN() != 0 {
		t.Fatalf("the standby applied up to LSN %d", sb.store.DB().LastLSN())
	}
}

// TestNeedsImageAfterRelease: a primary with a log sends a standby for
// an image when the records after its applied LSN are neither in memory
// nor in the log, whose segments holding them were released after a
// checkpoint (log_retention_bytes), instead of retrying the log forever.
func TestNeedsImageAfterRelease(t *testing.T) {
	primary := newPrimary(t, durability.Options{FS: vfs.NewMemFS(), Level: durability.FsyncLog, Dirs: []string{"/a/log"}, SegmentSize: 4096, RingBytes: 300})
	// The setup's records are made durable before the transfers begin,
	// so the log's first segment holds them. Otherwise the flusher may
	// first run with more than a segment's worth pending (one core, a
	// busy machine): that block goes whole into a second segment, the
	// first holds no record, and releasing it leaves every record in the
	// log, which the standby then rightly catches up from.
	bank := banktest.Setup(t, primary.DB(), func(lsn uint64) error { return primary.Durable(context.Background(), lsn) })
	banktest.Run(primary.DB(), bank, 0, 4, 200, func(uint64) error { return nil }, nil)
	last := primary.DB().LastLSN()
	if err := primary.Durable(context.Background(), last); err != nil {
		t.Fatal(err)
	}
	rel, err := primary.Release(last-5, 0) // as after an image at LSN last-5
	if err != nil || rel.Segments == 0 {
		t.Fatalf("released %+v: %v", rel, err)
	}
	// What the test is about: the log no longer holds LSN 1.
	if r, err := primary.ReadLog(0); !errors.Is(err, logging.ErrReleased) {
		if r != nil {
			_ = r.Close()
		}
		t.Fatalf("after the release, reading the log from LSN 1: %v, want %v", err, logging.ErrReleased)
	}
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}})
	for deadline := time.Now().Add(10 * time.Second); snd.Standbys()[0].State != replica.StateNeedsImage; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("standby %+v", snd.Standbys())
		}
	}
	if st := snd.Standbys()[0]; sb.store.DB().LastLSN() != 0 || !strings.Contains(st.Reason, "needs an image") {
		t.Fatalf("the standby applied up to LSN %d; its state %+v", sb.store.DB().LastLSN(), st)
	}
}

var epoch0 = []*pb.EpochStart{{Epoch: 0, StartLsn: 1}}

// TestRefusals: a receiver turns away log it must not take (from a node
// not its peer, with a gap, damaged, of another epoch than its link's,
// from a sender behind it), with a clear status, and applies nothing of
// it.
// replicationClient dials the ReplicationService at addr until the end
// of the test.
func replicationClient(t *testing.T, addr string) pb.ReplicationServiceClient {
	t.Helper()
	cc, err := replica.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cc.Close() })
	return pb.NewReplicationServiceClient(cc)
}

// shipOn opens a link of c, says hello and sends the batches, and
// returns the code and message the call ends with.
func shipOn(t *testing.T, c pb.ReplicationServiceClient, hello *pb.ShipHello, batches ...*pb.LogBatch) (codes.Code, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := c.Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_Hello{Hello: hello}})
	for _, b := range batches {
		_ = st.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_Batch{Batch: b}})
	}
	_ = st.CloseSend()
	for {
		if _, err := st.Recv(); err != nil {
			return status.Code(err), status.Convert(err).Message()
		}
	}
}

func TestRefusals(t *testing.T) {
	src := newPrimary(t, durability.Options{Level: durability.NoLog})
	banktest.Setup(t, src.DB(), func(uint64) error { return nil })
	recs, _ := src.Ring().Read(nil, 0, 1<<20)
	n := uint64(len(recs))

	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	c := replicationClient(t, sb.addr)
	ship := func(hello *pb.ShipHello, batches ...*pb.LogBatch) (codes.Code, string) {
		return shipOn(t, c, hello, batches...)
	}
	hello := func() *pb.ShipHello { return &pb.ShipHello{Node: "a", Addr: "x:1", LastLsn: n, Epochs: epoch0} }
	good := func() *pb.LogBatch { return replica.EncodeBatchForTest(t, recs, 0) }
	cases := []struct {
		name  string
		hello *pb.ShipHello
		batch *pb.LogBatch
		code  codes.Code
	}{
		{"unknown peer", &pb.ShipHello{Node: "z", LastLsn: n, Epochs: epoch0}, good(), codes.PermissionDenied},
		{"a gap", hello(), func() *pb.LogBatch { return replica.EncodeBatchForTest(t, recs[1:], 0) }(), codes.DataLoss},
		{"a flipped bit", hello(), func() *pb.LogBatch { b := good(); b.Data[len(b.Data)/2] ^= 1; return b }(), codes.DataLoss},
		{"a wrong count", hello(), func() *pb.LogBatch { b := good(); b.Count++; return b }(), codes.DataLoss},
		{"another epoch in a batch", hello(), replica.EncodeBatchForTest(t, recs, 3), codes.FailedPrecondition},
	}
	for _, tc := range cases {
		code, msg := ship(tc.hello, tc.batch)
		if code != tc.code {
			t.Errorf("%s: %s %q, want %s", tc.name, code, msg, tc.code)
		}
		if got := sb.store.DB().LastLSN(); got != 0 {
			t.Fatalf("%s: the standby applied up to LSN %d", tc.name, got)
		}
	}
	// The good batch goes in; then a sender behind the standby has
	// diverged from it.
	if code, msg := ship(hello(), good()); code != codes.Unavailable && code != codes.OK {
		t.Fatalf("a good batch: %s %q", code, msg)
	}
	if got := sb.store.DB().LastLSN(); got != n {
		t.Fatalf("the standby is at LSN %d, want %d", got, n)
	}
	if code, msg := ship(&pb.ShipHello{Node: "a", LastLsn: n - 1, Epochs: epoch0}); code != codes.FailedPrecondition || !strings.Contains(msg, "diverged") {
		t.Fatalf("a sender behind the standby: %s %q", code, msg)
	}
	// A history that does not end at the hello's epoch is refused, and
	// so is a sender whose epoch is older than the standby's.
	if code, msg := ship(&pb.ShipHello{Node: "a", Epoch: 2, LastLsn: n, Epochs: epoch0}); code != codes.InvalidArgument {
		t.Fatalf("a bad epoch history: %s %q", code, msg)
	}
	if _, err := sb.epochs.Promote(n + 1); err != nil {
		t.Fatal(err)
	}
	if code, msg := ship(hello()); code != codes.FailedPrecondition || !strings.Contains(msg, "older") {
		t.Fatalf("an older epoch: %s %q", code, msg)
	}
	// A sender whose epoch started inside what the standby holds: the
	// standby's tail is another lineage's.
	if code, msg := ship(&pb.ShipHello{Node: "a", Epoch: 2, LastLsn: n + 5, Epochs: []*pb.EpochStart{{Epoch: 0, StartLsn: 1}, {Epoch: 2, StartLsn: n}}}); code != codes.FailedPrecondition || !strings.Contains(msg, "diverged") {
		t.Fatalf("a sender of another lineage: %s %q", code, msg)
	}
	if got := sb.store.DB().LastLSN(); got != n {
		t.Fatalf("the standby is at LSN %d, want %d", got, n)
	}
}

// TestReceiverCloseIsForGood: a Receiver stopped (a promotion under way)
// takes links again on Resume; one closed (a shutdown) does not, even
// when the Resume of a promotion that began before comes after Close.
func TestReceiverCloseIsForGood(t *testing.T) {
	src := newPrimary(t, durability.Options{Level: durability.NoLog})
	banktest.Setup(t, src.DB(), func(uint64) error { return nil })
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	c := replicationClient(t, sb.addr)
	// taken opens a link that sends nothing, and checks whether the
	// standby took it.
	taken := func(want bool, when string) {
		t.Helper()
		code, msg := shipOn(t, c, &pb.ShipHello{Node: "a", Addr: "x:1", LastLsn: src.DB().LastLSN(), Epochs: epoch0})
		if refused := code == codes.Unavailable && strings.Contains(msg, "takes no log now"); refused == want {
			t.Fatalf("%s: a link ended with %s %q", when, code, msg)
		}
	}
	taken(true, "at first")
	sb.recv.Stop()
	taken(false, "stopped")
	sb.recv.Resume()
	taken(true, "resumed")
	sb.recv.Stop()
	sb.recv.Close()
	sb.recv.Resume()
	taken(false, "resumed after Close")
}

// TestOneSenderAtATime: a standby follows one sender. The same sender's
// new link replaces its old one (which may be dead without the standby
// knowing); another peer at the same epoch is refused.
func TestOneSenderAtATime(t *testing.T) {
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a", "c")
	cc, err := replica.Dial(sb.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := pb.NewReplicationServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	open := func(node string) (grpc.BidiStreamingClient[pb.ShipRequest, pb.ShipResponse], error) {
		st, err := c.Ship(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_Hello{Hello: &pb.ShipHello{Node: node, Epochs: epoch0}}}); err != nil {
			t.Fatal(err)
		}
		m, err := st.Recv()
		if err == nil && m.GetState() == nil {
			t.Fatalf("%s: no state first", node)
		}
		return st, err
	}
	first, err := open("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open("c"); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "follows a") {
		t.Fatalf("another sender: %v", err)
	}
	if _, err := open("a"); err != nil {
		t.Fatalf("the same sender again: %v", err)
	}
	if _, err := first.Recv(); status.Code(err) != codes.Aborted {
		t.Fatalf("the replaced link: %v", err)
	}
}

// TestCatchUpFromLog: a standby further behind than the primary's ring
// reaches is sent the rest from the primary's log files, while commits go
// on, and ends with the primary's data over one link.
func TestCatchUpFromLog(t *testing.T) {
	primary := newPrimary(t, durability.Options{FS: vfs.NewMemFS(), Level: durability.FsyncLog, Dirs: []string{"/a/0", "/a/1"}, SegmentSize: 64 << 10, RingBytes: 4 << 10})
	bank := banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	banktest.Run(primary.DB(), bank, 0, 4, 200, func(uint64) error { return nil }, nil)
	if oldest := primary.Ring().Oldest(); oldest < 100 {
		t.Fatalf("the ring still holds LSN %d", oldest)
	}
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}})
	acked := banktest.Run(primary.DB(), bank, 1, 4, 100, func(lsn uint64) error { return primary.Wait(context.Background(), lsn, durability.FsyncLog) }, nil)
	caughtUp(t, primary, sb.store)
	banktest.Check(t, sb.store.DB(), acked, "standby")
	sameData(t, primary, sb.store)
	if st := snd.Standbys()[0]; st.Opened != 1 {
		t.Fatalf("the link: %+v", st)
	}
}

// fillingStandby returns a no-log primary shipping in mode (quorum 1,
// 200 ms timeout) to an fsync-log standby whose file system fs has room
// for a few segments, and a bank on the primary whose commits wait for
// it.
func fillingStandby(t *testing.T, mode replica.Mode) (*durability.Store, *vfs.MemFS, *standby, *replica.Sender, banktest.Bank) {
	t.Helper()
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	fs := vfs.NewMemFS()
	sb := newStandby(t, durability.Options{FS: fs, Level: durability.FsyncLog, Dirs: []string{"/b/log"}, SegmentSize: 64 << 10}, "a")
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: sb.addr}}, Mode: mode, Quorum: 1, Timeout: 200 * time.Millisecond})
	bank := banktest.Setup(t, primary.DB(), func(lsn uint64) error {
		_, err := snd.Wait(context.Background(), lsn, -1)
		return err
	})
	fs.SetSpace(200 << 10)
	return primary, fs, sb, snd, bank
}

// transferUntilDegraded commits transfers on primary, each waiting for
// snd, until three degrade (the standby's disk is full), and returns the
// LSNs of those confirmed before, in order.
func transferUntilDegraded(t *testing.T, primary *durability.Store, snd *replica.Sender, bank banktest.Bank) []uint64 {
	t.Helper()
	var confirmed []uint64
	degraded := 0
	for i := 0; i < 20000 && degraded < 3; i++ {
		lsn, err := bank.Transfer(primary.DB(), 0, 1, 1, fmt.Sprintf("t%d", i))
		if err != nil {
			t.Fatal(err)
		}
		d, err := snd.Wait(context.Background(), lsn, -1)
		if err != nil {
			t.Fatal(err)
		}
		if d {
			degraded++
		} else {
			confirmed = append(confirmed, lsn)
		}
	}
	if degraded == 0 || len(confirmed) == 0 {
		t.Fatalf("%d commits confirmed, %d degraded: the standby never ran out of disk, or did from the start", len(confirmed), degraded)
	}
	return confirmed
}

// TestReceivedAckThroughAFullDisk: under received-ack, commits confirmed
// as held by a standby whose disk then fills are held by it even when the
// primary goes away at once: once space is freed, the standby applies
// every one of them. Before, the standby dropped what it could not apply
// and counted on the primary to send it again.
func TestReceivedAckThroughAFullDisk(t *testing.T) {
	primary, fs, sb, snd, bank := fillingStandby(t, replica.ReceivedAck)
	all := transferUntilDegraded(t, primary, snd, bank)
	confirmed := all[len(all)-1]
	applied := sb.store.DB().LastLSN()
	snd.Close() // the primary is gone: nothing is sent again
	fs.SetSpace(0)
	deadline := time.Now().Add(20 * time.Second)
	for sb.store.DB().LastLSN() < confirmed {
		if time.Now().After(deadline) {
			t.Fatalf("LSN %d was confirmed as received; once space was freed, with the primary gone, the standby applied only up to %d", confirmed, sb.store.DB().LastLSN())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("confirmed up to LSN %d; the standby had applied %d when its disk was full, and caught up once space was freed", confirmed, applied)
}

// TestStandbyThatCannotApply: a standby whose disk is full cannot log
// what it receives: it applies nothing past the first record it cannot
// take (it holds it and tries again), nothing after it is acknowledged
// as applied, and commits that wait for it degrade instead of being
// confirmed. Every confirmed commit is on the standby.
func TestStandbyThatCannotApply(t *testing.T) {
	primary, _, sb, snd, bank := fillingStandby(t, replica.AppliedAck)
	confirmed := transferUntilDegraded(t, primary, snd, bank)
	applied := sb.store.DB().LastLSN()
	for _, lsn := range confirmed {
		if lsn > applied {
			t.Fatalf("LSN %d was confirmed, and the standby has applied only up to %d", lsn, applied)
		}
	}
	st := snd.Standbys()[0]
	if st.Applied > applied || st.State == replica.StateStreaming {
		t.Fatalf("the primary sees %+v; the standby applied up to %d", st, applied)
	}
	t.Logf("%d confirmed, then degraded; the standby stopped at LSN %d (%s)", len(confirmed), applied, st.State)
}

// TestIdleLinkReconnectsSoon: a link that broke after it had held for a
// while is opened again soon, however many times that happened before,
// even when no commit was shipped on it.
//
// Found in review: the pause before a link was opened again was reset
// only when the link had shipped a record, so on a quiet primary each
// cut doubled it, up to 5 s, however long the link had worked between
// cuts: after a few network blips, a standby stayed away for seconds,
// and commits that waited for it blocked or degraded meanwhile.
func TestIdleLinkReconnectsSoon(t *testing.T) {
	primary := newPrimary(t, durability.Options{Level: durability.NoLog})
	sb := newStandby(t, durability.Options{Level: durability.NoLog}, "a")
	proxy := faultproxy.New(t, sb.addr)
	snd := newSender(t, primary, replica.SenderOptions{Peers: []replica.Peer{{Name: "b", Addr: proxy.Addr()}}})
	banktest.Setup(t, primary.DB(), func(uint64) error { return nil })
	caughtUp(t, primary, sb.store)
	cut := time.Now()
	for i := 1; ; i++ {
		for st := snd.Standbys()[0]; st.Opened < i || st.State != replica.StateStreaming; st = snd.Standbys()[0] {
			if time.Since(cut) > time.Second {
				t.Fatalf("cut %d: the link is not open again after %s: %+v", i-1, time.Since(cut), st)
			}
			time.Sleep(2 * time.Millisecond)
		}
		if i == 6 {
			return
		}
		time.Sleep(300 * time.Millisecond) // the link works for a while
		proxy.Cut()
		cut = time.Now()
	}
}

// lockedBuf is a log output a test reads while the node still writes.
type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLinkWithoutHelloIsLogged: a link whose first message is not a
// hello is refused with INVALID_ARGUMENT, nothing of it is applied, and
// the standby logs why, as it does for every other refusal.
//
// Found in review: that refusal alone went unlogged, so an operator saw
// nothing on the standby of a sender that spoke out of turn.
func TestLinkWithoutHelloIsLogged(t *testing.T) {
	src := newPrimary(t, durability.Options{Level: durability.NoLog})
	banktest.Setup(t, src.DB(), func(uint64) error { return nil })
	recs, _ := src.Ring().Read(nil, 0, 1<<20)

	st := openStore(t, durability.Options{Level: durability.NoLog, Standby: true})
	var logged lockedBuf
	recv := replica.NewReceiver(st, replica.ReceiverOptions{Node: "b", Peers: []string{"a"}, Epochs: memEpochs(t),
		Logger: hclog.New(&hclog.LoggerOptions{Output: &logged})})
	c := replicationClient(t, serveReplication(t, recv))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := c.Ship(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Send(&pb.ShipRequest{Msg: &pb.ShipRequest_Batch{Batch: replica.EncodeBatchForTest(t, recs, 0)}})
	_ = s.CloseSend()
	for err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a batch before the hello: %v", err)
	}
	if got := st.DB().LastLSN(); got != 0 {
		t.Fatalf("the standby applied up to LSN %d", got)
	}
	if out := logged.String(); !strings.Contains(out, "refused a replication link") || !strings.Contains(out, "hello") {
		t.Fatalf("the standby logged %q", out)
	}
}
