package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// errDiffers makes audit exit with 1 when the nodes differ.
var errDiffers = errors.New("the standby differs from the primary")

// audit compares a standby with its primary, table by table (SPEC 6),
// the tables of either node: each node digests the table as of a
// snapshot (AdminService.TableDigest), the standby's at the primary's LSN
// or later; buckets whose digests differ are compared row by row, again a
// few times, as commits that were on their way settle. Rows that still
// differ are listed, and tables only one node has. With -repair the
// primary logs its rows of those keys again (AdminService.RepairRows),
// the standby takes them from the log like any commit, and the table is
// compared again; a table only one node has is not repaired, as no RPC
// logs a table's definition again.
func audit(args []string, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("mmdbd audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	primary := fs.String("primary", "", "the primary's `host:port`")
	standby := fs.String("standby", "", "the standby's `host:port`")
	buckets := fs.Uint("buckets", 256, fmt.Sprintf("key-hash buckets per table (1 to %d)", pb.MaxDigestBuckets))
	wait := fs.Duration("wait", 10*time.Second, "how long the standby may take to reach the primary's LSN")
	rounds := fs.Int("rounds", 3, "how often differing buckets are compared again before they count")
	repair := fs.Bool("repair", false, "copy the primary's rows that differ to the standby through the primary's log, then compare again")
	limit := fs.Duration("timeout", 10*time.Minute, "give up after this long, the whole audit")
	cf := addConnFlags(fs, true)
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	if *primary == "" || *standby == "" {
		fmt.Fprintln(stderr, "mmdbd audit: -primary and -standby are required")
		return errUsage
	}
	if *buckets < 1 || *buckets > pb.MaxDigestBuckets {
		fmt.Fprintf(stderr, "mmdbd audit: -buckets %d: from 1 to %d\n", *buckets, pb.MaxDigestBuckets)
		return errUsage
	}
	p, err := cf.dial(*primary)
	if err != nil {
		return err
	}
	defer closeInto(&err, p, "the connection to the primary "+*primary)
	s, err := cf.dial(*standby)
	if err != nil {
		return err
	}
	defer closeInto(&err, s, "the connection to the standby "+*standby)
	report := &errWriter{w: stdout}
	defer func() {
		if report.err != nil {
			err = errors.Join(err, fmt.Errorf("print the report: %w", report.err))
		}
	}()
	a := auditor{p: pb.NewAdminServiceClient(p), s: pb.NewAdminServiceClient(s), buckets: uint32(*buckets), wait: *wait, rounds: *rounds, repair: *repair, out: report}
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	defer func() { err = gaveUp(ctx, *limit, err) }()
	list := func(conn *grpc.ClientConn, addr string) (*pb.ListTablesResponse, error) {
		resp, err := pb.NewDatabaseServiceClient(conn).ListTables(ctx, &pb.ListTablesRequest{})
		if err != nil {
			return nil, fmt.Errorf("list the tables of %s: %w", addr, cf.explain(addr, err))
		}
		return resp, nil
	}
	pTables, err := list(p, *primary)
	if err != nil {
		return err
	}
	sTables, err := list(s, *standby)
	if err != nil {
		return err
	}
	differs := false
	for _, name := range tableNames(pTables, sTables) {
		d, err := a.table(ctx, name)
		if err != nil {
			return err
		}
		differs = differs || d
	}
	if differs {
		return errDiffers
	}
	return nil
}

// tableNames returns the names of the tables of both lists, each once,
// sorted: a table only one node has is audited too.
func tableNames(lists ...*pb.ListTablesResponse) []string {
	var names []string
	for _, l := range lists {
		for _, t := range l.GetTables() {
			names = append(names, t.GetName())
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

type auditor struct {
	p, s    pb.AdminServiceClient
	buckets uint32
	wait    time.Duration
	rounds  int
	repair  bool
	out     io.Writer // the report; audit checks its writes at the end
}

// What digests finds when a table is not on both nodes.
var (
	errOnlyPrimary = errors.New("the table is only on the primary")
	errOnlyStandby = errors.New("the table is only on the standby")
	errOnNeither   = errors.New("the table is on neither node")
)

// digests returns both nodes' digests of table, the standby's at the
// primary's LSN or later, listing the rows of the buckets in list. A
// table one node lacks is errOnlyPrimary or errOnlyStandby, or
// errOnNeither: the standby is asked at the primary's LSN then, so that a
// table created or dropped a moment ago is on both sides or neither.
func (a auditor) digests(ctx context.Context, table string, list []uint32) (p, s *pb.TableDigestResponse, err error) {
	p, perr := a.p.TableDigest(ctx, &pb.TableDigestRequest{Table: table, Buckets: a.buckets, List: list})
	lsn := p.GetLsn()
	switch {
	case grpcstatus.Code(perr) == codes.NotFound:
		st, err := a.p.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return nil, nil, fmt.Errorf("the primary's status: %w", err)
		}
		lsn = st.GetLastLsn()
	case perr != nil:
		return nil, nil, fmt.Errorf("digest %s on the primary: %w", table, perr)
	}
	// -wait bounds the standby's catching up, not its digest of the
	// table, which takes as long as the table is large.
	switch applied, ok, err := a.waitApplied(ctx, lsn); {
	case err != nil:
		return nil, nil, fmt.Errorf("digest %s on the standby: wait for it to apply LSN %d: %w", table, lsn, err)
	case !ok:
		return nil, nil, fmt.Errorf("digest %s on the standby: it has applied LSN %d, not yet the primary's %d, after %s", table, applied, lsn, a.wait)
	}
	s, serr := a.s.TableDigest(ctx, &pb.TableDigestRequest{Table: table, Buckets: a.buckets, List: list, MinLsn: lsn})
	switch {
	case serr != nil && grpcstatus.Code(serr) != codes.NotFound:
		return nil, nil, fmt.Errorf("digest %s on the standby: %w", table, serr)
	case perr != nil && serr != nil:
		return nil, nil, errOnNeither
	case perr != nil:
		return nil, nil, errOnlyStandby
	case serr != nil:
		return nil, nil, errOnlyPrimary
	}
	return p, s, nil
}

// table audits one table, repairs it if asked to, and reports whether
// it differs.
func (a auditor) table(ctx context.Context, table string) (bool, error) {
	diffs, err := a.compare(ctx, table)
	if err != nil {
		return a.onOneNode(table, err)
	}
	if len(diffs) == 0 || !a.repair {
		return len(diffs) > 0, nil
	}
	r, err := a.repairRows(ctx, table, diffs)
	if err != nil {
		if r.put+r.deleted > 0 {
			fmt.Fprintf(a.out, "%s: repaired %d rows from the primary (%d put, %d deleted, up to LSN %d) before the repair failed\n", table, r.put+r.deleted, r.put, r.deleted, r.lsn)
		}
		return true, err
	}
	fmt.Fprintf(a.out, "%s: repaired %d rows from the primary (%d put, %d deleted, up to LSN %d); comparing again\n", table, r.put+r.deleted, r.put, r.deleted, r.lsn)
	// The primary digests the table as of its last repair or later, and
	// the standby once it has applied that (min_lsn).
	if diffs, err = a.compare(ctx, table); err != nil {
		return a.onOneNode(table, err)
	}
	if len(diffs) > 0 {
		fmt.Fprintf(a.out, "%s: still differs after the repair\n", table)
		return true, nil
	}
	return false, nil
}

// onOneNode reports a table compare found on one node only, a
// difference, or on neither, none; it returns compare's other errors.
func (a auditor) onOneNode(table string, err error) (bool, error) {
	switch {
	case errors.Is(err, errOnlyPrimary):
		fmt.Fprintf(a.out, "%s: only on the primary: the standby has no such table, and repair cannot create one (image the standby again)\n", table)
		return true, nil
	case errors.Is(err, errOnlyStandby):
		fmt.Fprintf(a.out, "%s: only on the standby: the primary has no such table; audit does not drop it (image the standby again)\n", table)
		return true, nil
	case errors.Is(err, errOnNeither):
		fmt.Fprintf(a.out, "%s: dropped during the audit\n", table)
		return false, nil
	}
	return false, err
}

// compare compares one table on both nodes, prints what it finds and
// returns the rows that differ.
func (a auditor) compare(ctx context.Context, table string) ([]rowDiff, error) {
	p, s, err := a.digests(ctx, table, nil)
	if err != nil {
		return nil, err
	}
	var rows uint64
	for _, b := range p.GetBuckets() {
		rows += b.GetRows()
	}
	var diffs []rowDiff
	for round := 0; ; round++ {
		var list []uint32
		for i := range p.GetBuckets() {
			if !proto.Equal(p.GetBuckets()[i], s.GetBuckets()[i]) {
				list = append(list, uint32(i))
			}
		}
		if len(list) == 0 {
			fmt.Fprintf(a.out, "%s: %d rows, the same (primary at LSN %d, standby at %d)\n", table, rows, p.GetLsn(), s.GetLsn())
			return nil, nil
		}
		if p, s, err = a.listing(ctx, table, list); err != nil {
			return nil, err
		}
		diffs = rowDiffs(p.GetRows(), s.GetRows())
		if len(diffs) == 0 || round+1 >= a.rounds {
			break
		}
	}
	if len(diffs) == 0 {
		fmt.Fprintf(a.out, "%s: %d rows, the same after commits on their way settled\n", table, rows)
		return nil, nil
	}
	fmt.Fprintf(a.out, "%s: %d rows differ (primary at LSN %d, standby at %d):\n", table, len(diffs), p.GetLsn(), s.GetLsn())
	for _, d := range diffs {
		fmt.Fprintf(a.out, "  %s\n", d)
	}
	return diffs, nil
}

// listing returns both nodes' digests of table listing the rows of the
// buckets in list (digests), in as many calls as the nodes take: a
// listing one refuses as too large is asked for in halves, whose rows
// are put together (each half's compared at its own LSNs), with the
// bucket digests and LSNs of the last.
func (a auditor) listing(ctx context.Context, table string, list []uint32) (p, s *pb.TableDigestResponse, err error) {
	p, s, err = a.digests(ctx, table, list)
	if !tooLarge(err) || len(list) == 1 {
		return p, s, err
	}
	half := len(list) / 2
	p1, s1, err := a.listing(ctx, table, list[:half])
	if err != nil {
		return nil, nil, err
	}
	if p, s, err = a.listing(ctx, table, list[half:]); err != nil {
		return nil, nil, err
	}
	p.Rows = append(p1.GetRows(), p.GetRows()...)
	s.Rows = append(s1.GetRows(), s.GetRows()...)
	return p, s, nil
}

// How a row differs, in the order repairRows sends them.
const (
	onlyStandby = "only on the standby"
	rowsDiffer  = "the rows differ"
	onlyPrimary = "only on the primary"
)

// rowDiff is a key whose rows differ: RowDigest.key, and how.
type rowDiff struct {
	key, how string
}

func (d rowDiff) String() string { return "key " + showKey(d.key) + ": " + d.how }

// rowDiffs lists the keys whose rows differ between two listings, in the
// order of their descriptions.
func rowDiffs(p, s []*pb.RowDigest) []rowDiff {
	ph, sh := map[string]uint64{}, map[string]uint64{}
	for _, r := range p {
		ph[string(r.GetKey())] = r.GetHash()
	}
	for _, r := range s {
		sh[string(r.GetKey())] = r.GetHash()
	}
	var out []rowDiff
	for k, h := range ph {
		switch sv, ok := sh[k]; {
		case !ok:
			out = append(out, rowDiff{k, onlyPrimary})
		case sv != h:
			out = append(out, rowDiff{k, rowsDiffer})
		}
	}
	for k := range sh {
		if _, ok := ph[k]; !ok {
			out = append(out, rowDiff{k, onlyStandby})
		}
	}
	// Sorted by description, each rendered once.
	shown := make([]string, len(out))
	order := make([]int, len(out))
	for i, d := range out {
		shown[i], order[i] = d.String(), i
	}
	slices.SortFunc(order, func(i, j int) int { return strings.Compare(shown[i], shown[j]) })
	sorted := make([]rowDiff, len(out))
	for i, j := range order {
		sorted[i] = out[j]
	}
	return sorted
}

// repairChunkBytes bounds the keys of one RepairRows call, well below
// the default max_message_bytes. A call the primary refuses as too large
// (a smaller max_message_bytes, or a redo record over the log's limit) is
// split in two and sent again.
const repairChunkBytes = 1 << 20

// tooLarge says whether a node refused a call as too large: a message
// over its max_message_bytes (gRPC's refusal) or a redo record over its
// log's limit or a digest's listing over max_message_bytes (the
// TOO_LARGE detail). Other RESOURCE_EXHAUSTED refusals (a full disk)
// are not helped by smaller calls.
func tooLarge(err error) bool {
	st := grpcstatus.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		return false
	}
	if strings.Contains(st.Message(), "larger than max") {
		return true
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == pb.ErrorDomain && info.GetReason() == pb.ReasonTooLarge {
			return true
		}
	}
	return false
}

// repaired sums what RepairRows calls logged.
type repaired struct {
	put, deleted uint64
	lsn          uint64 // the last call's
}

// repairRows has the primary log its rows of the keys that differ again,
// in as few transactions as the limits allow: the standby applies each
// like any commit. When it takes several, rows only on the standby go
// first, then rows that differ: a standby refuses a record whose row
// takes a unique key another of its rows still holds, and deleting or
// changing those first frees such keys for the rows only on the primary.
// Each call waits for the standby to apply the one before, so a record
// it refused stops the repair there, saying so.
func (a auditor) repairRows(ctx context.Context, table string, diffs []rowDiff) (repaired, error) {
	rank := map[string]int{onlyStandby: 0, rowsDiffer: 1, onlyPrimary: 2}
	diffs = slices.Clone(diffs)
	slices.SortStableFunc(diffs, func(x, y rowDiff) int { return rank[x.how] - rank[y.how] })
	var (
		r     repaired
		chunk [][]byte
		size  int
	)
	for i, d := range diffs {
		chunk = append(chunk, []byte(d.key))
		size += len(d.key)
		if i+1 < len(diffs) && len(chunk) < pb.MaxRepairKeys && size+len(diffs[i+1].key) <= repairChunkBytes {
			continue
		}
		if err := a.repairChunk(ctx, table, chunk, &r); err != nil {
			return r, err
		}
		chunk, size = nil, 0
	}
	return r, nil
}

// repairChunk sends keys to the primary's RepairRows, once the standby
// has applied the call before; a refusal as too large splits them in two.
func (a auditor) repairChunk(ctx context.Context, table string, keys [][]byte, r *repaired) error {
	if r.lsn > 0 {
		if err := a.applied(ctx, r.lsn); err != nil {
			return err
		}
	}
	resp, err := a.p.RepairRows(ctx, &pb.RepairRowsRequest{Table: table, Keys: keys})
	if tooLarge(err) && len(keys) > 1 {
		half := len(keys) / 2
		if err := a.repairChunk(ctx, table, keys[:half], r); err != nil {
			return err
		}
		return a.repairChunk(ctx, table, keys[half:], r)
	}
	if err != nil {
		return fmt.Errorf("repair %d rows of %s on the primary: %w", len(keys), table, err)
	}
	r.put += resp.GetRowsPut()
	r.deleted += resp.GetRowsDeleted()
	r.lsn = resp.GetLsn()
	return nil
}

// applied waits, up to -wait, until the standby has applied LSN lsn.
func (a auditor) applied(ctx context.Context, lsn uint64) error {
	applied, ok, err := a.waitApplied(ctx, lsn)
	switch {
	case err != nil:
		return fmt.Errorf("wait for the standby to apply the repair at LSN %d: %w", lsn, err)
	case !ok:
		return fmt.Errorf("the standby has applied LSN %d, not the repair at LSN %d, after %s: it may have refused the record (see its log; then image it again)",
			applied, lsn, a.wait)
	}
	return nil
}

// waitApplied asks the standby, up to -wait, until it has applied LSN
// lsn; it returns the LSN it last said it had applied, and whether that
// reached lsn.
func (a auditor) waitApplied(ctx context.Context, lsn uint64) (uint64, bool, error) {
	deadline := time.Now().Add(a.wait)
	for {
		st, err := a.s.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return 0, false, fmt.Errorf("the standby's status: %w", err)
		}
		if st.GetAppliedLsn() >= lsn {
			return st.GetAppliedLsn(), true, nil
		}
		if time.Now().After(deadline) {
			return st.GetAppliedLsn(), false, nil
		}
		select {
		case <-ctx.Done():
			return st.GetAppliedLsn(), false, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// showKey renders a key as JSON of its values.
func showKey(k string) string {
	var row pb.Row
	if err := proto.Unmarshal([]byte(k), &row); err != nil {
		return fmt.Sprintf("%x", k)
	}
	b, err := protojson.Marshal(&row)
	if err != nil {
		return fmt.Sprintf("%x", k)
	}
	return string(b)
}
