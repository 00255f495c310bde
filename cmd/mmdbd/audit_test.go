package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/servertest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// fakeAdmin is a node's AdminService as audit sees it: TableDigest gives
// one bucket with one row of hash hash (of the tables in tables, if not
// nil; the others are NOT_FOUND), RepairRows takes at most maxKeys keys
// a call (more is refused as too large, as a redo record over the log's
// limit is; with full, every call is refused as on a full disk), and
// Status says it has applied every repair. The rest is not implemented.
type fakeAdmin struct {
	pb.AdminServiceClient
	key     []byte
	hash    uint64
	tables  []string
	maxKeys int
	full    bool
	lsn     uint64
	calls   [][]string // the keys of each RepairRows call taken
}

func (f *fakeAdmin) Status(context.Context, *pb.StatusRequest, ...grpc.CallOption) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{LastLsn: f.lsn, AppliedLsn: f.lsn}, nil
}

func (f *fakeAdmin) TableDigest(_ context.Context, req *pb.TableDigestRequest, _ ...grpc.CallOption) (*pb.TableDigestResponse, error) {
	if f.tables != nil && !slices.Contains(f.tables, req.GetTable()) {
		return nil, grpcstatus.Errorf(codes.NotFound, "table %q not found", req.GetTable())
	}
	resp := &pb.TableDigestResponse{Lsn: f.lsn, Buckets: []*pb.BucketDigest{{Rows: 1, Sum: f.hash}}}
	if len(req.GetList()) > 0 {
		resp.Rows = []*pb.RowDigest{{Key: f.key, Hash: f.hash}}
	}
	return resp, nil
}

func (f *fakeAdmin) RepairRows(_ context.Context, req *pb.RepairRowsRequest, _ ...grpc.CallOption) (*pb.RepairRowsResponse, error) {
	if f.full {
		return nil, grpcstatus.Error(codes.ResourceExhausted, "the disk is full")
	}
	if len(req.GetKeys()) > f.maxKeys {
		st, err := grpcstatus.New(codes.ResourceExhausted, fmt.Sprintf("%d keys", len(req.GetKeys()))).
			WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonTooLarge})
		if err != nil {
			return nil, err
		}
		return nil, st.Err()
	}
	var keys []string
	for _, k := range req.GetKeys() {
		keys = append(keys, string(k))
	}
	f.calls = append(f.calls, keys)
	f.lsn++
	return &pb.RepairRowsResponse{Lsn: f.lsn, RowsPut: uint64(len(keys)) - 1, RowsDeleted: 1}, nil
}

func testKey(t *testing.T, id int64) string {
	t.Helper()
	k, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Row{Values: []*pb.Value{{Kind: &pb.Value_Int64{Int64: id}}}})
	if err != nil {
		t.Fatal(err)
	}
	return string(k)
}

// TestRepairRowsSplits: keys the primary refuses in one call go in
// halves until it takes them, each key once; rows only on the standby
// go first, then rows that differ, then rows only on the primary.
func TestRepairRowsSplits(t *testing.T) {
	hows := []string{onlyPrimary, rowsDiffer, onlyStandby}
	var diffs []rowDiff
	for i := range 11 {
		diffs = append(diffs, rowDiff{key: testKey(t, int64(i)), how: hows[i%3]})
	}
	p := &fakeAdmin{maxKeys: 3}
	r, err := auditor{p: p, s: p}.repairRows(context.Background(), "t", diffs)
	if err != nil {
		t.Fatal(err)
	}
	how := map[string]string{}
	for _, d := range diffs {
		how[d.key] = d.how
	}
	rank := map[string]int{onlyStandby: 0, rowsDiffer: 1, onlyPrimary: 2}
	sent, last := map[string]bool{}, 0
	for _, call := range p.calls {
		if len(call) == 0 || len(call) > p.maxKeys {
			t.Fatalf("a call of %d keys", len(call))
		}
		for _, k := range call {
			if sent[k] {
				t.Fatalf("key %s sent twice", showKey(k))
			}
			sent[k] = true
			if rank[how[k]] < last {
				t.Fatalf("a row %s after rows %s: %v", how[k], hows[2-last], p.calls)
			}
			last = rank[how[k]]
		}
	}
	if len(sent) != len(diffs) {
		t.Fatalf("%d keys sent of %d", len(sent), len(diffs))
	}
	calls := uint64(len(p.calls))
	if r.put+r.deleted != uint64(len(diffs)) || r.deleted != calls || r.lsn != calls {
		t.Fatalf("repaired %+v after %d calls", r, calls)
	}

	// A key the primary refuses alone fails the repair, naming the table;
	// so does a full disk, at once.
	p = &fakeAdmin{maxKeys: 0}
	if _, err := (auditor{p: p, s: p}).repairRows(context.Background(), "t", diffs); grpcstatus.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "rows of t") {
		t.Fatalf("a repair the primary refuses: %v", err)
	}
	p = &fakeAdmin{maxKeys: 100, full: true}
	if _, err := (auditor{p: p, s: p}).repairRows(context.Background(), "t", diffs); grpcstatus.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "11 rows of t") {
		t.Fatalf("a repair on a full disk: %v", err)
	}

	// A standby that does not apply a repair stops the next call.
	p = &fakeAdmin{maxKeys: 3}
	s := &fakeAdmin{}
	if _, err := (auditor{p: p, s: s, wait: 50 * time.Millisecond}).repairRows(context.Background(), "t", diffs); err == nil || !strings.Contains(err.Error(), "not the repair at LSN 1") || len(p.calls) != 1 {
		t.Fatalf("a standby that does not apply the repair: %v after %d calls", err, len(p.calls))
	}
}

// TestAuditStillDiffers: a row the repair does not reach (a standby that
// does not follow the primary) is reported as still differing, and the
// table counts as differing.
func TestAuditStillDiffers(t *testing.T) {
	k := []byte(testKey(t, 7))
	p := &fakeAdmin{key: k, hash: 1, maxKeys: 10}
	s := &fakeAdmin{key: k, hash: 2, lsn: 100} // past the primary's LSN, repair and all
	var out strings.Builder
	a := auditor{p: p, s: s, buckets: 1, rounds: 1, repair: true, out: &out}
	differs, err := a.table(context.Background(), "t")
	if err != nil || !differs {
		t.Fatalf("audit of a table that stays different: %v, %v\n%s", differs, err, &out)
	}
	for _, want := range []string{"t: 1 rows differ", `"7"`, "the rows differ", "t: repaired 1 rows from the primary", "t: still differs after the repair"} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("the output misses %q:\n%s", want, &out)
		}
	}
	if len(p.calls) != 1 {
		t.Fatalf("%d repairs, want 1", len(p.calls))
	}
}

// TestAuditBucketsInRange: -buckets is refused, before audit dials
// anything, unless TableDigest takes it (1 to pb.MaxDigestBuckets); it is
// never cut to 32 bits (4294967297 became 1).
func TestAuditBucketsInRange(t *testing.T) {
	for _, n := range []string{"0", "65537", "4294967297"} {
		var stderr strings.Builder
		code := run([]string{"audit", "-primary", "127.0.0.1:1", "-standby", "127.0.0.1:2", "-buckets", n}, nil, io.Discard, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), "-buckets "+n+": from 1 to 65536") {
			t.Errorf("audit -buckets %s: exit %d\n%s", n, code, &stderr)
		}
	}
}

// TestAuditTablesOnOneNode: audit goes through the tables of both nodes;
// a table only one of them has is a difference, reported as such and
// not repaired (no RPC logs a table's definition again, and audit never
// drops a table); a table gone from both since the listing is none.
func TestAuditTablesOnOneNode(t *testing.T) {
	list := func(names ...string) *pb.ListTablesResponse {
		resp := &pb.ListTablesResponse{}
		for _, n := range names {
			resp.Tables = append(resp.Tables, &pb.TableStatus{Name: n})
		}
		return resp
	}
	if got, want := tableNames(list("b", "p"), list("s", "b")), []string{"b", "p", "s"}; !slices.Equal(got, want) {
		t.Fatalf("the tables of both nodes: %q, want %q", got, want)
	}

	k := []byte(testKey(t, 7))
	p := &fakeAdmin{key: k, hash: 1, tables: []string{"b", "p"}, maxKeys: 10}
	s := &fakeAdmin{key: k, hash: 1, tables: []string{"b", "s"}}
	for _, tc := range []struct {
		table   string
		differs bool
		says    string
	}{
		{"b", false, "b: 1 rows, the same"},
		{"p", true, "p: only on the primary: the standby has no such table, and repair cannot create one"},
		{"s", true, "s: only on the standby: the primary has no such table; audit does not drop it"},
		{"gone", false, "gone: dropped during the audit"},
	} {
		var out strings.Builder
		a := auditor{p: p, s: s, buckets: 1, rounds: 1, repair: true, out: &out}
		differs, err := a.table(context.Background(), tc.table)
		if err != nil || differs != tc.differs || !strings.Contains(out.String(), tc.says) {
			t.Errorf("audit of %s: differs %v, %v; want differs %v saying %q:\n%s", tc.table, differs, err, tc.differs, tc.says, &out)
		}
	}
	if len(p.calls) != 0 {
		t.Errorf("repairs sent for tables on one node: %q", p.calls)
	}
}

// TestAuditListsDifferencesPastTheMessageLimit: a table that differs in
// more rows than one TableDigest reply holds (the primary refuses the
// listing as too large) is listed in calls of fewer buckets, and every
// differing row is reported; the audit failed at the first listing.
func TestAuditListsDifferencesPastTheMessageLimit(t *testing.T) {
	small := func(c *conf.Config) { c.MaxMessageBytes = 64 << 10 }
	primary, paddr := servertest.Start(t, small)
	standby, saddr := servertest.Start(t, small)
	commitRows(t, primary, 0, 4000)
	// The standby's LSN passes the primary's (audit waits for it), with
	// two of its rows.
	commitRows(t, standby, 0, 1)
	commitRows(t, standby, 1, 1)
	var stdout, stderr strings.Builder
	code := run([]string{"audit", "-primary", paddr, "-standby", saddr, "-rounds", "1"}, nil, &stdout, &stderr)
	if code != 1 || !strings.Contains(stdout.String(), "kv: 3998 rows differ") || !strings.Contains(stderr.String(), "differs from the primary") {
		t.Fatalf("audit of a table that differs in 3998 rows: exit %d\n%s\n%s", code, truncate(stdout.String(), 200), &stderr)
	}
}

// TestAuditWaitBoundsOnlyTheStandbysCatchUp: -wait bounds how long the
// standby may take to reach the primary's LSN, not how long it takes to
// digest a table: a standby already there, with a table that takes
// longer than -wait to scan, is audited, not given up on.
func TestAuditWaitBoundsOnlyTheStandbysCatchUp(t *testing.T) {
	primary, paddr := servertest.Start(t, nil)
	standby, saddr := servertest.Start(t, nil)
	commitRows(t, primary, 0, 20000)
	commitRows(t, standby, 0, 20000)
	var stdout, stderr strings.Builder
	start := time.Now()
	code := run([]string{"audit", "-primary", paddr, "-standby", saddr, "-wait", "1ms", "-buckets", "1"}, nil, &stdout, &stderr)
	if code != 0 || !strings.Contains(stdout.String(), "kv: 20000 rows, the same") {
		t.Fatalf("audit with -wait 1ms of a table the standby digests in longer: exit %d after %s\n%s\n%s", code, time.Since(start), &stdout, &stderr)
	}
	// A standby that does not reach the primary's LSN in -wait is still
	// given up on, saying how far it got.
	commitRows(t, primary, 20000, 1)
	stdout.Reset()
	stderr.Reset()
	code = run([]string{"audit", "-primary", paddr, "-standby", saddr, "-wait", "50ms"}, nil, &stdout, &stderr)
	if code == 0 || !strings.Contains(stderr.String(), "it has applied LSN 2, not yet the primary's 3, after 50ms") {
		t.Fatalf("audit of a standby behind the primary: exit %d\n%s\n%s", code, &stdout, &stderr)
	}
}
