package tatp

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/internal/pbmem"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// The mix over gRPC. Each transaction is one or two calls, as a client
// that cares about latency would write it:
//
//   - the reads are one Get, or (GET_NEW_DESTINATION) one Commit batch of
//     Gets: the special facility and the three call forwarding rows its
//     start times can name, filtered here;
//   - UPDATE_SUBSCRIBER_DATA is one batch whose condition is that the
//     special facility exists;
//   - the transactions that find the subscriber by sub_nbr do that Get,
//     then a batch whose condition is that the row still has that sub_nbr,
//     so the pair serializes as one transaction would.

// Caller sends the two calls the mix uses, by unary RPC or on a Session
// stream.
type Caller interface {
	Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error)
	Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error)
}

// loadedTable holds one row, written once a remote load has finished:
// the number of subscribers loaded. A node whose TATP tables lack it
// holds a load that stopped part way (or failed, or was killed).
var loadedTable = mem.TableDef{
	Name:       "tatp_loaded",
	Columns:    []mem.ColumnDef{{Name: "id", Type: mem.TypeUint64}, {Name: "subscribers", Type: mem.TypeUint64}},
	PrimaryKey: []string{"id"},
}

// ErrPartialLoad is returned by RemoteSubscribers for a node whose TATP
// load did not finish.
var ErrPartialLoad = errors.New("tatp: the load of the TATP tables did not finish")

// CreateRemote creates the TATP tables on a node, and the table that
// marks their load finished.
func CreateRemote(ctx context.Context, db pb.DatabaseServiceClient) error {
	for _, def := range append(Tables(), loadedTable) {
		if _, err := db.CreateTable(ctx, &pb.CreateTableRequest{Table: pbmem.Table(def)}); err != nil {
			return fmt.Errorf("tatp: create %s: %w", def.Name, err)
		}
	}
	return nil
}

// LoadRemote loads p subscribers onto a node with parallel loaders, in
// batches of one Commit each, then marks the load finished. The rows are
// those Load makes for the same seed. progress, if not nil, is called
// with the subscribers loaded so far.
func LoadRemote(ctx context.Context, db pb.DatabaseServiceClient, p uint64, workers int, seed uint64, progress func(done uint64)) error {
	err := inBatches(p, 200, workers, progress, func(start, end uint64) error {
		return loadRemoteRange(ctx, db, newGen(p, seed), start, end)
	})
	if err != nil {
		return err
	}
	_, err = db.Insert(ctx, &pb.InsertRequest{Table: loadedTable.Name, Row: &pb.Row{Values: []*pb.Value{u64(1), u64(p)}}})
	if err != nil {
		return fmt.Errorf("tatp: mark the load of %d subscribers finished: %w", p, err)
	}
	return nil
}

// RemoteSubscribers returns the number of subscribers of the TATP
// database a node holds, or 0 if it holds none of its tables. A database
// whose load did not finish (the TATP tables are there, the mark of a
// finished load is not), or that no longer holds the subscribers its
// load did, is an error wrapping ErrPartialLoad that says how to reload.
func RemoteSubscribers(ctx context.Context, db pb.DatabaseServiceClient) (uint64, error) {
	list, err := db.ListTables(ctx, &pb.ListTablesRequest{})
	if err != nil {
		return 0, fmt.Errorf("tatp: list tables: %w", err)
	}
	rows := map[string]uint64{}
	for _, t := range list.GetTables() {
		rows[t.GetName()] = t.GetRows()
	}
	var present []string
	for _, def := range append(Tables(), loadedTable) {
		if _, ok := rows[def.Name]; ok {
			present = append(present, def.Name)
		}
	}
	if len(present) == 0 {
		return 0, nil
	}
	drop := make([]string, len(present))
	for i, name := range present {
		drop[i] = "drop table " + name
	}
	reload := fmt.Sprintf("drop them (mmdbd shell -c %q) to reload", strings.Join(drop, "; "))
	if !slices.Contains(present, loadedTable.Name) {
		return 0, fmt.Errorf("%w: the node has TATP tables but not %s, written once a load has finished (a load by an older mmdbd bench has none either); %s",
			ErrPartialLoad, loadedTable.Name, reload)
	}
	r, err := db.Get(ctx, &pb.GetRequest{Table: loadedTable.Name, Key: []*pb.Value{u64(1)}})
	if err != nil {
		return 0, fmt.Errorf("tatp: read %s: %w", loadedTable.Name, err)
	}
	vals := r.GetRow().GetValues()
	if !r.GetFound() || len(vals) != len(loadedTable.Columns) {
		return 0, fmt.Errorf("%w: %s has no row, written once the load has finished; %s", ErrPartialLoad, loadedTable.Name, reload)
	}
	p := vals[1].GetUint64()
	if len(present) != len(Tables())+1 || rows["subscriber"] != p {
		return 0, fmt.Errorf("%w: %d subscribers were loaded, and the node holds %d in tables %s; %s",
			ErrPartialLoad, p, rows["subscriber"], strings.Join(present, ", "), reload)
	}
	return p, nil
}

func loadRemoteRange(ctx context.Context, db pb.DatabaseServiceClient, g *gen, start, end uint64) error {
	req := &pb.CommitRequest{}
	for sid := start; sid <= end; sid++ {
		err := g.subscriber(sid, func(t int, row []mem.Value) error {
			req.Operations = append(req.Operations, &pb.Operation{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{
				Table: tableNames[t], Row: &pb.Row{Values: pbmem.Values(row)},
			}}})
			return nil
		})
		if err != nil {
			return err
		}
	}
	if _, err := db.Commit(ctx, req); err != nil {
		return fmt.Errorf("tatp: load subscribers %d-%d: %w", start, end, err)
	}
	return nil
}

// RemoteClient runs the mix over gRPC. Each goroutine needs its own.
type RemoteClient struct {
	picker
	call Caller
}

// NewRemoteClient returns a client for a node holding p subscribers.
func NewRemoteClient(p, seed uint64, call Caller) *RemoteClient {
	return &RemoteClient{picker: newPicker(p, seed), call: call}
}

// Column ordinals of the rows the mix reads (Tables' order).
const (
	sfIsActive = 2
	cfStart    = 2
	cfEnd      = 3
)

func u64(v uint64) *pb.Value { return &pb.Value{Kind: &pb.Value_Uint64{Uint64: v}} }
func str(v string) *pb.Value { return &pb.Value{Kind: &pb.Value_String_{String_: v}} }

func get(table string, key ...*pb.Value) *pb.Operation {
	return &pb.Operation{Op: &pb.Operation_Get{Get: &pb.GetRequest{Table: table, Key: key}}}
}

func update(table string, key []*pb.Value, col string, v *pb.Value) *pb.Operation {
	return &pb.Operation{Op: &pb.Operation_Update{Update: &pb.UpdateRequest{Table: table, Key: key, Set: []*pb.ColumnValue{{Column: col, Value: v}}}}}
}

func exists(table string, key ...*pb.Value) *pb.Condition {
	return &pb.Condition{Table: table, Key: key, Expect: pb.Condition_EXPECT_EXISTS}
}

// Run executes one transaction of kind t; ok reports whether it succeeded
// in the TATP sense. The node retries serialization conflicts of single
// calls itself; an ABORTED that still comes back is retried here.
func (c *RemoteClient) Run(ctx context.Context, t Tx) (ok bool, err error) {
	for attempt := 0; ; attempt++ {
		ok, err = c.run(ctx, t)
		if status.Code(err) != codes.Aborted || attempt == 100 {
			return ok, err
		}
	}
}

func (c *RemoteClient) run(ctx context.Context, t Tx) (bool, error) {
	sid := c.sid()
	switch t {
	case GetSubscriberData:
		r, err := c.call.Get(ctx, &pb.GetRequest{Table: "subscriber", Key: []*pb.Value{u64(sid)}})
		return r.GetFound(), err
	case GetAccessData:
		r, err := c.call.Get(ctx, &pb.GetRequest{Table: "access_info", Key: []*pb.Value{u64(sid), u64(1 + c.r.Uint64N(4))}})
		return r.GetFound(), err
	case GetNewDestination:
		return c.getNewDestination(ctx, sid)
	case UpdateSubscriberData:
		sf := []*pb.Value{u64(sid), u64(1 + c.r.Uint64N(4))}
		r, err := c.call.Commit(ctx, &pb.CommitRequest{
			Conditions: []*pb.Condition{exists("special_facility", sf...)},
			Operations: []*pb.Operation{
				update("subscriber", []*pb.Value{u64(sid)}, "bit_1", &pb.Value{Kind: &pb.Value_Bool{Bool: c.r.IntN(2) == 1}}),
				update("special_facility", sf, "data_a", u64(uint64(c.r.IntN(256)))),
			},
		})
		return r.GetCommitted(), err
	case UpdateLocation:
		vlr := u64(1 + c.r.Uint64N(1<<32-1))
		return c.bySubNbr(ctx, sid, func(id uint64) ([]*pb.Condition, []*pb.Operation) {
			return nil, []*pb.Operation{update("subscriber", []*pb.Value{u64(id)}, "vlr_location", vlr)}
		})
	case InsertCallForwarding:
		sfType, st := 1+c.r.Uint64N(4), uint64(8*c.r.IntN(3))
		end, numberx := st+1+uint64(c.r.IntN(8)), SubNbr(1+c.r.Uint64N(c.p))
		return c.bySubNbr(ctx, sid, func(id uint64) ([]*pb.Condition, []*pb.Operation) {
			row := &pb.Row{Values: []*pb.Value{u64(id), u64(sfType), u64(st), u64(end), str(numberx)}}
			return []*pb.Condition{exists("special_facility", u64(id), u64(sfType))},
				[]*pb.Operation{{Op: &pb.Operation_Insert{Insert: &pb.InsertRequest{Table: "call_forwarding", Row: row}}}}
		})
	case DeleteCallForwarding:
		sfType, st := 1+c.r.Uint64N(4), uint64(8*c.r.IntN(3))
		return c.bySubNbr(ctx, sid, func(id uint64) ([]*pb.Condition, []*pb.Operation) {
			key := []*pb.Value{u64(id), u64(sfType), u64(st)}
			return nil, []*pb.Operation{{Op: &pb.Operation_Delete{Delete: &pb.DeleteRequest{Table: "call_forwarding", Key: key}}}}
		})
	}
	return false, fmt.Errorf("tatp: no transaction %d", t)
}

func (c *RemoteClient) getNewDestination(ctx context.Context, sid uint64) (bool, error) {
	sfType, st, et := 1+c.r.Uint64N(4), uint64(8*c.r.IntN(3)), 1+c.r.Uint64N(24)
	ops := []*pb.Operation{get("special_facility", u64(sid), u64(sfType))}
	for start := uint64(0); start <= 16; start += 8 {
		ops = append(ops, get("call_forwarding", u64(sid), u64(sfType), u64(start)))
	}
	r, err := c.call.Commit(ctx, &pb.CommitRequest{Operations: ops})
	if err != nil {
		return false, err
	}
	res := r.GetResults()
	if len(res) != len(ops) {
		return false, fmt.Errorf("tatp: GET_NEW_DESTINATION: %d results for %d gets", len(res), len(ops))
	}
	if !res[0].GetFound() || !res[0].GetRow().GetValues()[sfIsActive].GetBool() {
		return false, nil
	}
	for _, cf := range res[1:] {
		if v := cf.GetRow().GetValues(); cf.GetFound() && v[cfStart].GetUint64() <= st && et < v[cfEnd].GetUint64() {
			return true, nil
		}
	}
	return false, nil
}

// bySubNbr finds sid's subscriber through sub_nbr, then commits the
// conditions and operations batch makes for the s_id found, on the further
// condition that the subscriber still has that sub_nbr. A missing row or
// a duplicate key is a TATP failure, not an error.
func (c *RemoteClient) bySubNbr(ctx context.Context, sid uint64, batch func(id uint64) ([]*pb.Condition, []*pb.Operation)) (bool, error) {
	nbr := SubNbr(sid)
	r, err := c.call.Get(ctx, &pb.GetRequest{Table: "subscriber", Index: "by_sub_nbr", Key: []*pb.Value{str(nbr)}})
	if err != nil || !r.GetFound() {
		return false, err
	}
	id := r.GetRow().GetValues()[0].GetUint64()
	same := exists("subscriber", u64(id))
	same.Equals = []*pb.ColumnValue{{Column: "sub_nbr", Value: str(nbr)}}
	conds, ops := batch(id)
	cr, err := c.call.Commit(ctx, &pb.CommitRequest{Conditions: append([]*pb.Condition{same}, conds...), Operations: ops})
	switch status.Code(err) {
	case codes.AlreadyExists, codes.NotFound:
		return false, nil
	}
	return cr.GetCommitted(), err
}

// Unary makes a Caller of a DatabaseService client: one RPC per call.
func Unary(db pb.DatabaseServiceClient) Caller { return unary{db} }

type unary struct{ db pb.DatabaseServiceClient }

func (u unary) Get(ctx context.Context, req *pb.GetRequest) (*pb.GetResponse, error) {
	return u.db.Get(ctx, req)
}

func (u unary) Commit(ctx context.Context, req *pb.CommitRequest) (*pb.CommitResponse, error) {
	return u.db.Commit(ctx, req)
}
