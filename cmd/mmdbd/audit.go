package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// errDiffers makes audit exit with 1 when the nodes differ.
var errDiffers = errors.New("the standby differs from the primary")

// audit compares a standby with its primary, table by table (SPEC 6):
// each node digests the table as of a snapshot (AdminService.TableDigest),
// the standby's at the primary's LSN or later; buckets whose digests
// differ are compared row by row, again a few times, as commits that
// were on their way settle. Rows that still differ are listed.
func audit(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mmdbd audit", flag.ContinueOnError)
	fs.SetOutput(stderr)
	primary := fs.String("primary", "", "the primary's `host:port`")
	standby := fs.String("standby", "", "the standby's `host:port`")
	buckets := fs.Uint("buckets", 256, "key-hash buckets per table")
	wait := fs.Duration("wait", 10*time.Second, "how long the standby may take to reach the primary's LSN")
	rounds := fs.Int("rounds", 3, "how often differing buckets are compared again before they count")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *primary == "" || *standby == "" {
		fmt.Fprintln(stderr, "mmdbd audit: -primary and -standby are required")
		return errUsage
	}
	p, err := grpc.NewClient(*primary, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *primary, err)
	}
	defer p.Close()
	s, err := grpc.NewClient(*standby, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *standby, err)
	}
	defer s.Close()
	a := auditor{p: pb.NewAdminServiceClient(p), s: pb.NewAdminServiceClient(s), buckets: uint32(*buckets), wait: *wait, out: stdout}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	tables, err := pb.NewDatabaseServiceClient(p).ListTables(ctx, &pb.ListTablesRequest{})
	if err != nil {
		return fmt.Errorf("list the tables of %s: %w", *primary, err)
	}
	differs := false
	for _, t := range tables.GetTables() {
		d, err := a.table(ctx, t.GetName(), *rounds)
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

type auditor struct {
	p, s    pb.AdminServiceClient
	buckets uint32
	wait    time.Duration
	out     io.Writer
}

// digests returns both nodes' digests of table, the standby's at the
// primary's LSN or later, listing the rows of the buckets in list.
func (a auditor) digests(ctx context.Context, table string, list []uint32) (p, s *pb.TableDigestResponse, err error) {
	p, err = a.p.TableDigest(ctx, &pb.TableDigestRequest{Table: table, Buckets: a.buckets, List: list})
	if err != nil {
		return nil, nil, fmt.Errorf("digest %s on the primary: %w", table, err)
	}
	wctx, cancel := context.WithTimeout(ctx, a.wait)
	defer cancel()
	s, err = a.s.TableDigest(wctx, &pb.TableDigestRequest{Table: table, Buckets: a.buckets, List: list, MinLsn: p.GetLsn()})
	if err != nil {
		return nil, nil, fmt.Errorf("digest %s on the standby: %w", table, err)
	}
	return p, s, nil
}

// table audits one table and reports whether it differs.
func (a auditor) table(ctx context.Context, table string, rounds int) (bool, error) {
	p, s, err := a.digests(ctx, table, nil)
	if err != nil {
		return false, err
	}
	var rows uint64
	for _, b := range p.GetBuckets() {
		rows += b.GetRows()
	}
	var diffs []string
	for round := 0; ; round++ {
		var list []uint32
		for i := range p.GetBuckets() {
			if !proto.Equal(p.GetBuckets()[i], s.GetBuckets()[i]) {
				list = append(list, uint32(i))
			}
		}
		if len(list) == 0 {
			fmt.Fprintf(a.out, "%s: %d rows, the same (primary at LSN %d, standby at %d)\n", table, rows, p.GetLsn(), s.GetLsn())
			return false, nil
		}
		if p, s, err = a.digests(ctx, table, list); err != nil {
			return false, err
		}
		diffs = rowDiffs(p.GetRows(), s.GetRows())
		if len(diffs) == 0 || round+1 >= rounds {
			break
		}
	}
	if len(diffs) == 0 {
		fmt.Fprintf(a.out, "%s: %d rows, the same after commits on their way settled\n", table, rows)
		return false, nil
	}
	fmt.Fprintf(a.out, "%s: %d rows differ (primary at LSN %d, standby at %d):\n", table, len(diffs), p.GetLsn(), s.GetLsn())
	for _, d := range diffs {
		fmt.Fprintf(a.out, "  %s\n", d)
	}
	return true, nil
}

// rowDiffs lists the keys whose rows differ between two listings.
func rowDiffs(p, s []*pb.RowDigest) []string {
	ph, sh := map[string]uint64{}, map[string]uint64{}
	for _, r := range p {
		ph[string(r.GetKey())] = r.GetHash()
	}
	for _, r := range s {
		sh[string(r.GetKey())] = r.GetHash()
	}
	var out []string
	for k, h := range ph {
		switch sv, ok := sh[k]; {
		case !ok:
			out = append(out, "key "+showKey(k)+": only on the primary")
		case sv != h:
			out = append(out, "key "+showKey(k)+": the rows differ")
		}
	}
	for k := range sh {
		if _, ok := ph[k]; !ok {
			out = append(out, "key "+showKey(k)+": only on the standby")
		}
	}
	slices.Sort(out)
	return out
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
