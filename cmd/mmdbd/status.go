package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// statusJSON is `mmdbd status -json`: the field names of SPEC section 10.
type statusJSON struct {
	Node             string        `json:"node"`
	Role             string        `json:"role"`
	Epoch            uint64        `json:"epoch"`
	Durability       string        `json:"durability"`
	SyncMode         string        `json:"sync_mode"`
	SyncQuorum       uint32        `json:"sync_quorum"`
	SyncStandbys     []string      `json:"sync_standbys"`
	SyncTimeoutMs    float64       `json:"sync_timeout_ms"`
	OnSyncTimeout    string        `json:"on_sync_timeout"`
	Primary          string        `json:"primary,omitempty"`
	Degraded         bool          `json:"degraded"`
	WritesRefused    string        `json:"writes_refused,omitempty"`
	LastLSN          uint64        `json:"last_lsn"`
	DurableLSN       uint64        `json:"durable_lsn"`
	AppliedLSN       uint64        `json:"applied_lsn"`
	CheckpointLSN    uint64        `json:"checkpoint_lsn"`
	Standbys         []standbyJSON `json:"standbys"`
	Tables           []tableJSON   `json:"tables"`
	UptimeSeconds    float64       `json:"uptime_s"`
	Version          string        `json:"version"`
	OpenTransactions uint32        `json:"open_transactions"`
}

type standbyJSON struct {
	Name        string `json:"name"`
	Addr        string `json:"addr"`
	State       string `json:"state"`
	ReceivedLSN uint64 `json:"received_lsn"`
	AppliedLSN  uint64 `json:"applied_lsn"`
	LagRecords  uint64 `json:"lag_records"`
	LagBytes    uint64 `json:"lag_bytes"`
	LagMs       uint64 `json:"lag_ms"`
	Reason      string `json:"reason,omitempty"`
	Via         string `json:"via,omitempty"`
	// OutsideQuorum: sync_standbys names other standbys, so this one's
	// acknowledgements never complete a commit's quorum.
	OutsideQuorum bool `json:"outside_quorum,omitempty"`
}

type tableJSON struct {
	Name       string      `json:"name"`
	Rows       uint64      `json:"rows"`
	Bytes      uint64      `json:"bytes"`
	HeapBytes  uint64      `json:"heap_bytes"`
	IndexBytes uint64      `json:"index_bytes"`
	Indexes    []indexJSON `json:"indexes"`
}

type indexJSON struct {
	Name     string `json:"name"`
	Kind     string `json:"kind"`
	Entries  uint64 `json:"entries"`
	Bytes    uint64 `json:"bytes"`
	Building bool   `json:"building"`
	Fault    string `json:"fault,omitempty"`
}

func toStatusJSON(r *pb.StatusResponse) statusJSON {
	out := statusJSON{
		Node: r.GetNode(), Role: r.GetRole(), Epoch: r.GetEpoch(), Durability: r.GetDurability(), SyncMode: r.GetSyncMode(),
		SyncQuorum: r.GetSyncQuorum(), SyncStandbys: append([]string{}, r.GetSyncStandbys()...),
		SyncTimeoutMs: float64(r.GetSyncTimeout().AsDuration()) / float64(time.Millisecond), OnSyncTimeout: r.GetOnSyncTimeout(),
		Primary: r.GetPrimary(), Degraded: r.GetDegraded(), WritesRefused: r.GetWritesRefused(),
		LastLSN: r.GetLastLsn(), DurableLSN: r.GetDurableLsn(), AppliedLSN: r.GetAppliedLsn(), CheckpointLSN: r.GetCheckpointLsn(),
		Standbys: []standbyJSON{}, Tables: []tableJSON{},
		UptimeSeconds: r.GetUptime().AsDuration().Seconds(), Version: r.GetVersion(), OpenTransactions: r.GetOpenTransactions(),
	}
	for _, s := range r.GetStandbys() {
		out.Standbys = append(out.Standbys, standbyJSON{s.GetName(), s.GetAddr(), s.GetState(), s.GetReceivedLsn(), s.GetAppliedLsn(), s.GetLagRecords(), s.GetLagBytes(), s.GetLagMs(), s.GetReason(), s.GetVia(), s.GetOutsideQuorum()})
	}
	for _, t := range r.GetTables() {
		tj := tableJSON{t.GetName(), t.GetRows(), t.GetBytes(), t.GetHeapBytes(), t.GetIndexBytes(), []indexJSON{}}
		for _, ix := range t.GetIndexes() {
			kind := strings.ToLower(strings.TrimPrefix(ix.GetKind().String(), "INDEX_KIND_"))
			tj.Indexes = append(tj.Indexes, indexJSON{ix.GetName(), kind, ix.GetEntries(), ix.GetBytes(), ix.GetBuilding(), ix.GetFault()})
		}
		out.Tables = append(out.Tables, tj)
	}
	return out
}

// status prints a node's status, as text or JSON.
func status(args []string, stdout, stderr io.Writer) error {
	var asJSON *bool
	return adminCall("status", args, stderr, 5*time.Second, func(fs *flag.FlagSet) {
		asJSON = fs.Bool("json", false, "print JSON (SPEC section 10's field names)")
	}, func(ctx context.Context, addr string, admin pb.AdminServiceClient) error {
		resp, err := admin.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return fmt.Errorf("status of %s: %w", addr, err)
		}
		st := toStatusJSON(resp)
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			err = enc.Encode(st)
		} else {
			err = printStatus(stdout, st)
		}
		if err != nil {
			return fmt.Errorf("print the status of %s: %w", addr, err)
		}
		return nil
	})
}

// adminCall runs an admin command: it parses the command's flags (-addr,
// -timeout and the connection flags, plus those flags adds), connects to
// the node, and calls fn with its AdminService and a context that ends
// after -timeout.
func adminCall(cmd string, args []string, stderr io.Writer, timeout time.Duration, flags func(*flag.FlagSet),
	fn func(ctx context.Context, addr string, admin pb.AdminServiceClient) error) (err error) {
	fs := flag.NewFlagSet("mmdbd "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	given := fs.String("addr", "", "the node's `host:port` (default: -config's listen address, else "+defaultAddr+")")
	limit := fs.Duration("timeout", timeout, "give up after this long")
	cf := addConnFlags(fs, true)
	if flags != nil {
		flags(fs)
	}
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	addr, err := cf.addr(*given)
	if err != nil {
		return err
	}
	conn, err := cf.dial(addr)
	if err != nil {
		return err
	}
	defer closeInto(&err, conn, "the connection to "+addr)
	ctx, cancel := context.WithTimeout(context.Background(), *limit)
	defer cancel()
	return gaveUp(ctx, *limit, cf.explain(addr, fn(ctx, addr, pb.NewAdminServiceClient(conn))))
}

// gaveUp returns err, a command's failure, saying that the command gave
// up after its -timeout when ctx, which ends then, has ended: the
// operator learns which flag to raise.
func gaveUp(ctx context.Context, limit time.Duration, err error) error {
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w (gave up after -timeout %s)", err, limit)
	}
	return err
}

func printStatus(w io.Writer, st statusJSON) error {
	out := &errWriter{w: w}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "node\t%s\nrole\t%s\nepoch\t%d\ndurability\t%s\nsync mode\t%s\n", st.Node, st.Role, st.Epoch, st.Durability, st.SyncMode)
	counted := "any standby"
	if len(st.SyncStandbys) > 0 {
		counted = strings.Join(st.SyncStandbys, ", ")
	}
	fmt.Fprintf(tw, "sync quorum\t%d of %s\nsync timeout\t%s, then %s\n", st.SyncQuorum, counted, time.Duration(math.Round(st.SyncTimeoutMs*float64(time.Millisecond))), st.OnSyncTimeout)
	if st.Primary != "" {
		fmt.Fprintf(tw, "primary\t%s\n", st.Primary)
	}
	if st.Degraded {
		fmt.Fprintf(tw, "degraded\tyes: commits do not wait for the standbys until they catch up\n")
	}
	if st.WritesRefused != "" {
		fmt.Fprintf(tw, "writes refused\t%s\n", st.WritesRefused)
	}
	fmt.Fprintf(tw, "last lsn\t%d\ndurable lsn\t%d\napplied lsn\t%d\ncheckpoint lsn\t%d\n", st.LastLSN, st.DurableLSN, st.AppliedLSN, st.CheckpointLSN)
	fmt.Fprintf(tw, "open transactions\t%d\nuptime\t%s\nversion\t%s\n", st.OpenTransactions, time.Duration(st.UptimeSeconds*float64(time.Second)).Round(time.Second), st.Version)
	fmt.Fprintf(tw, "\nstandby\taddr\tstate\treceived lsn\tapplied lsn\tlag records\tlag bytes\tlag ms\n")
	for _, s := range st.Standbys {
		name := s.Name
		if s.Via != "" {
			name += " (via " + s.Via + ")"
		}
		if s.OutsideQuorum {
			name += " (outside the quorum)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\n", name, s.Addr, s.State, s.ReceivedLSN, s.AppliedLSN, s.LagRecords, s.LagBytes, s.LagMs)
		if s.Reason != "" {
			fmt.Fprintf(tw, "\t(%s)\n", s.Reason)
		}
	}
	fmt.Fprintf(tw, "\ntable\trows\tbytes\theap bytes\tindex bytes\n")
	for _, t := range st.Tables {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", t.Name, t.Rows, t.Bytes, t.HeapBytes, t.IndexBytes)
		for _, ix := range t.Indexes {
			switch {
			case ix.Fault != "":
				fmt.Fprintf(tw, "\t(index %s cannot be built: %s)\n", ix.Name, ix.Fault)
			case ix.Building:
				fmt.Fprintf(tw, "\t(building index %s: %d entries)\n", ix.Name, ix.Entries)
			}
		}
	}
	return out.flush(tw)
}
