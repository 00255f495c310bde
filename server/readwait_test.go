package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// noStandbys is a syncWaiter for a node without standbys.
type noStandbys struct{}

func (noStandbys) waitSync(context.Context, uint64, replica.Mode) (bool, error) { return false, nil }
func (noStandbys) waitRead(context.Context, uint64) error                       { return nil }
func (noStandbys) syncHolds(uint64, replica.Mode) bool                          { return true }
func (noStandbys) canSync() error                                               { return nil }

// memFSService returns a store at fsync-log on fs (a MemFS, or one
// wrapping it), without standbys, and a dbService over it with the acct
// table.
func memFSService(t *testing.T, fs vfs.FS) (*durability.Store, *dbService) {
	t.Helper()
	store, err := durability.Open(durability.Options{FS: fs, Level: durability.FsyncLog, Dirs: []string{"/log"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := store.Close(); err != nil && !errors.Is(err, logging.ErrFailed) {
			t.Error(err)
		}
	})
	s := &dbService{db: store.DB(), store: store, sync: noStandbys{}, txs: newTxTable(store.DB(), 10, 64<<20, time.Minute, nil),
		cv: converter{maxValueBytes: 1 << 20}, maxScanRows: 1000, maxMsgBytes: 4 << 20}
	if _, err := s.CreateTable(ctx(t), &pb.CreateTableRequest{Table: accountsTable()}); err != nil {
		t.Fatal(err)
	}
	return store, s
}

// TestCommitTheLogFailsToWrite: a commit in memory whose record the log
// then fails to write (an I/O error) is answered INTERNAL with the
// NOT_DURABLE detail and its LSN, never UNAVAILABLE, which clients answer
// by running the write again elsewhere; a write after it, which the
// failed log refuses and which changes nothing, is UNAVAILABLE with the
// REFUSED mark.
func TestCommitTheLogFailsToWrite(t *testing.T) {
	fs := vfs.NewMemFS()
	store, s := memFSService(t, fs)
	c := ctx(t)
	fs.CrashAfter(1) // the next write to a file fails, and every one after it
	last := store.DB().LastLSN()
	_, err := s.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 100)})
	wantCode(t, err, codes.Internal, "redo log failed", fmt.Sprint("LSN ", last+1), "in memory")
	if lsn, ok := lsnReason(err, pb.ReasonNotDurable); !ok || lsn != last+1 {
		t.Fatalf("the commit's error names LSN %d (detail %v), want %d with NOT_DURABLE: %v", lsn, ok, last+1, err)
	}
	_, err = s.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(2, 100)})
	wantCode(t, err, codes.Unavailable, "log failed")
	if !hasReason(err, pb.ReasonRefused) {
		t.Fatalf("the failed log's refusal has no REFUSED mark, which tells clients to send the write elsewhere: %v", err)
	}
	if got := store.DB().LastLSN(); got != last+1 {
		t.Fatalf("the refused write changed the database: last LSN %d, want %d", got, last+1)
	}
}

// lsnReason returns the LSN an error's ErrorInfo detail of reason names.
func lsnReason(err error, reason string) (uint64, bool) {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == reason {
			lsn, perr := strconv.ParseUint(info.GetMetadata()[pb.MetadataLSN], 10, 64)
			return lsn, perr == nil
		}
	}
	return 0, false
}

// TestReadsWaitForTheLog: at fsync-log, a read answers only once every
// commit whose effect it saw is durable (so no answer depends on a
// commit a crash could take back, as SPEC 3 has it for commits), and does not wait for commits it did
// not see. The log's syncs take syncDelay; while a commit of row 2 (an
// insert, then a delete) waits for its sync, a read of row 2 returns only
// after the sync, a read of row 1 or of a key never there at once.
func TestReadsWaitForTheLog(t *testing.T) {
	const syncDelay = 1500 * time.Millisecond
	fs := vfs.NewMemFS()
	store, s := memFSService(t, fs)
	c := ctx(t)
	if _, err := s.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(1, 100)}); err != nil {
		t.Fatal(err)
	}
	get := func(id int64) bool {
		t.Helper()
		r, err := s.Get(c, &pb.GetRequest{Table: "acct", Key: []*pb.Value{vI(id)}})
		if err != nil {
			t.Fatal(err)
		}
		return r.GetFound()
	}
	// slowCommit runs write while syncs are slow, waits until its commit
	// is in memory, and returns its LSN and a channel closed when it is
	// acknowledged.
	slowCommit := func(write func() (uint64, error)) (uint64, chan struct{}) {
		t.Helper()
		fs.SetSyncDelay(syncDelay)
		last := store.DB().LastLSN()
		acked := make(chan struct{})
		t.Cleanup(func() { <-acked }) // a failed test returns before the commit does
		go func() {
			defer close(acked)
			if _, err := write(); err != nil {
				t.Error(err)
			}
		}()
		for store.DB().LastLSN() == last {
			time.Sleep(time.Millisecond)
		}
		return last + 1, acked
	}
	// slowInsert is slowCommit of an insert of account id.
	slowInsert := func(id int64) (uint64, chan struct{}) {
		t.Helper()
		return slowCommit(func() (uint64, error) {
			r, err := s.Insert(c, &pb.InsertRequest{Table: "acct", Row: acctRow(id, 100)})
			return r.GetLsn(), err
		})
	}
	check := func(what string, lsn uint64, acked chan struct{}, read func() bool, want bool) {
		t.Helper()
		if got := read(); got != want {
			t.Fatalf("%s: found %v, want %v", what, got, want)
		}
		if d := store.DurableLSN(); d < lsn {
			t.Fatalf("%s: the read answered with the log durable to LSN %d, before the commit it saw at %d", what, d, lsn)
		}
		<-acked
		fs.SetSyncDelay(0)
	}
	notWaiting := func(what string, lsn uint64, read func() bool, want bool) {
		t.Helper()
		if got := read(); got != want {
			t.Fatalf("%s: found %v, want %v", what, got, want)
		}
		if d := store.DurableLSN(); d >= lsn {
			t.Fatalf("%s: the read answered after the commit at LSN %d it did not see was synced (%s): it waited for it", what, lsn, syncDelay)
		}
	}

	lsn, acked := slowInsert(2)
	notWaiting("row 1 while row 2's insert syncs", lsn, func() bool { return get(1) }, true)
	notWaiting("a key never there while row 2's insert syncs", lsn, func() bool { return get(9) }, false)
	check("row 2, inserted", lsn, acked, func() bool { return get(2) }, true)

	lsn, acked = slowCommit(func() (uint64, error) {
		r, err := s.Delete(c, &pb.DeleteRequest{Table: "acct", Key: []*pb.Value{vI(2)}})
		return r.GetLsn(), err
	})
	notWaiting("row 1 while row 2's delete syncs", lsn, func() bool { return get(1) }, true)
	check("row 2, deleted", lsn, acked, func() bool { return get(2) }, false)

	// A write that fails at commit on a unique secondary key another
	// commit took (name n3) tells of that commit as a read does.
	lsn, acked = slowInsert(3)
	check("a duplicate name", lsn, acked, func() bool {
		_, err := s.Insert(c, &pb.InsertRequest{Table: "acct", Row: row(vI(13), vS("n3"), vS("r1"), vI(1), vNull())})
		wantCode(t, err, codes.AlreadyExists, "n3")
		return true
	}, true)

	// A look at the catalog waits for the schema changes it saw: a table
	// described after its creation, or not found after its drop, listed,
	// or not found by a scan.
	ddl := func(create bool, name string) (uint64, chan struct{}) {
		t.Helper()
		return slowCommit(func() (uint64, error) {
			if !create {
				r, err := s.DropTable(c, &pb.DropTableRequest{Table: name})
				return r.GetLsn(), err
			}
			def := accountsTable()
			def.Name = name
			r, err := s.CreateTable(c, &pb.CreateTableRequest{Table: def})
			return r.GetLsn(), err
		})
	}
	describe := func(name string) bool {
		t.Helper()
		_, err := s.DescribeTable(c, &pb.DescribeTableRequest{Table: name})
		if status.Code(err) == codes.NotFound {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		return true
	}
	lsn, acked = ddl(true, "t2")
	check("t2, created, described", lsn, acked, func() bool { return describe("t2") }, true)
	lsn, acked = ddl(false, "t2")
	check("t2, dropped, described", lsn, acked, func() bool { return describe("t2") }, false)
	lsn, acked = ddl(true, "t3")
	check("t3, created, listed", lsn, acked, func() bool {
		r, err := s.ListTables(c, &pb.ListTablesRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return slices.ContainsFunc(r.GetTables(), func(st *pb.TableStatus) bool { return st.GetName() == "t3" })
	}, true)
	lsn, acked = ddl(false, "t3")
	check("t3, dropped, scanned", lsn, acked, func() bool {
		err := s.Scan(&pb.ScanRequest{Table: "t3"}, scanSink{ctx: c})
		if status.Code(err) != codes.NotFound {
			t.Fatalf("a scan of a dropped table: %v", err)
		}
		return false
	}, false)

	// A refused schema change tells of what it found as a read does: a
	// table there already, or two rows that share the key of a new
	// unique index (row 4's region is row 1's).
	lsn, acked = ddl(true, "t4")
	check("t4, created, created again", lsn, acked, func() bool {
		def := accountsTable()
		def.Name = "t4"
		_, err := s.CreateTable(c, &pb.CreateTableRequest{Table: def})
		wantCode(t, err, codes.AlreadyExists, "t4")
		return true
	}, true)
	lsn, acked = slowInsert(4)
	check("a unique index over rows 1 and 4", lsn, acked, func() bool {
		_, err := s.CreateIndex(c, &pb.CreateIndexRequest{Table: "acct", Index: &pb.Index{Name: "uq_region", Columns: []string{"region"}, Unique: true}})
		wantCode(t, err, codes.FailedPrecondition, "r1")
		return true
	}, true)
	// A malformed one tells of nothing, and waits for nothing.
	lsn, acked = slowInsert(5)
	notWaiting("an index without a definition", lsn, func() bool {
		_, err := s.CreateIndex(c, &pb.CreateIndexRequest{Table: "acct"})
		wantCode(t, err, codes.InvalidArgument, "missing")
		return true
	}, true)
	<-acked
	fs.SetSyncDelay(0)
}

// scanSink is a Scan stream that drops what it is sent.
type scanSink struct {
	grpc.ServerStream
	ctx context.Context
}

func (s scanSink) Context() context.Context  { return s.ctx }
func (scanSink) Send(*pb.ScanResponse) error { return nil }

// TestFailedBatchOnStaleReadsRunsAgain: a request that failed on reads
// no instant saw together (a batch's first condition read, then a commit
// changing its rows, then its second condition read and found failing)
// runs again, as after a conflict, and its answer comes from reads of
// one instant. Before, the failure was answered as it was.
func TestFailedBatchOnStaleReadsRunsAgain(t *testing.T) {
	_, s := memFSService(t, vfs.NewMemFS())
	for id := int64(1); id <= 2; id++ {
		if _, err := s.Insert(ctx(t), &pb.InsertRequest{Table: "acct", Row: acctRow(id, 100)}); err != nil {
			t.Fatal(err)
		}
	}
	bal := func(v int64) []*pb.ColumnValue { return []*pb.ColumnValue{{Column: "bal", Value: vI(v)}} }
	req := &pb.CommitRequest{Conditions: []*pb.Condition{
		{Table: "acct", Key: key(vI(1)), Expect: pb.Condition_EXPECT_EXISTS, Equals: bal(100)},
		{Table: "acct", Key: key(vI(2)), Expect: pb.Condition_EXPECT_EXISTS, Equals: bal(100)},
	}}
	ptx := s.db.Begin()
	defer ptx.Rollback()
	b, err := s.prepare(ctx(t), ptx, req)
	if err != nil {
		t.Fatal(err)
	}
	runs := 0
	resp := &pb.CommitResponse{}
	_, _, err = s.run(ctx(t), 0, req, func(tx *mem.Tx) error {
		runs++
		ok, err := b.conds[0].holds(tx)
		if err != nil || !ok {
			return fmt.Errorf("condition 0 on run %d: %v %v", runs, ok, err)
		}
		if runs == 1 { // another client moves 50 from row 2 to row 1
			other := &pb.CommitRequest{Operations: []*pb.Operation{
				{Op: &pb.Operation_Update{Update: &pb.UpdateRequest{Table: "acct", Key: key(vI(1)), Set: bal(150)}}},
				{Op: &pb.Operation_Update{Update: &pb.UpdateRequest{Table: "acct", Key: key(vI(2)), Set: bal(50)}}},
			}}
			if _, err := s.Commit(ctx(t), other); err != nil {
				return err
			}
		}
		ok, err = b.conds[1].holds(tx)
		if err != nil {
			return err
		}
		if !ok {
			resp.FailedCondition = 1
			return errConditionFailed
		}
		return nil
	})
	// The second run fails condition 0: row 1 holds 150.
	if runs != 2 || err == nil || !strings.Contains(err.Error(), "condition 0 on run 2") {
		t.Fatalf("%d runs, ending with %v (failed condition %d); want a second run that finds condition 0 failing", runs, err, resp.GetFailedCondition())
	}
}

// sentStream is a Session stream that keeps what is sent on it.
type sentStream struct {
	grpc.ServerStream // nil: only Context and Send are called
	ctx               context.Context
	sent              []*pb.SessionResponse
}

func (s *sentStream) Context() context.Context          { return s.ctx }
func (s *sentStream) Send(m *pb.SessionResponse) error  { s.sent = append(s.sent, m); return nil }
func (s *sentStream) Recv() (*pb.SessionRequest, error) { return nil, context.Canceled }

// TestSessionStopsWhenCanceled: the requests of a message not yet run
// when its stream ends are not run: the client that canceled would never
// learn what they did. They used to run, and their writes committed.
func TestSessionStopsWhenCanceled(t *testing.T) {
	_, s := memFSService(t, vfs.NewMemFS())
	c, cancel := context.WithCancel(ctx(t))
	cancel()
	stream := &sentStream{ctx: c}
	insert := &pb.Request{Id: 1, Op: &pb.Request_Insert{Insert: &pb.InsertRequest{Table: "acct", Row: acctRow(5, 5)}}}
	if err := s.answer(c, stream, []*pb.Request{insert}, newSessionTxs()); status.Code(err) != codes.Canceled {
		t.Fatalf("a message on a canceled stream: %v", err)
	}
	if r, err := s.Get(ctx(t), &pb.GetRequest{Table: "acct", Key: key(vI(5))}); err != nil || r.GetFound() || len(stream.sent) != 0 {
		t.Fatalf("the canceled message's insert: found %v, %v; %d replies sent", r.GetFound(), err, len(stream.sent))
	}
}
