package tests

import (
	"context"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// regInput is a register operation: a write of v, or a read.
type regInput struct {
	key   int64
	write bool
	v     int64
}

// registers is the model: one int64 register per key, all zero at first.
var registers = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := map[int64][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(regInput).key
			by[k] = append(by[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range by {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return int64(0) },
	Step: func(state, input, output any) (bool, any) {
		in := input.(regInput)
		if in.write {
			return true, in.v
		}
		return output.(int64) == state.(int64), state
	},
}

// TestLinearizableAcrossFailover: clients read and write registers on a
// primary that ships to a standby at applied-ack; the primary is killed
// with SIGKILL mid-run, while the standby is stopped (SIGSTOP) for a
// moment, the standby promoted, and the clients go on there. The history (porcupine) must be linearizable: no acknowledged
// write is lost, and no read shows a write that the failover then takes
// back. A write whose outcome the client cannot know (the call failed,
// or went on without its standby) may or may not have happened.
func TestLinearizableAcrossFailover(t *testing.T) {
	b := start(t, "-node", "b", "-role", "standby", "-durability", "mmap-log", "-peer", "a=127.0.0.1:1")
	a := start(t, "-node", "a", "-durability", "mmap-log", "-sync-mode", "applied-ack", "-peer", "b="+b.addr)
	adb, _ := a.client()
	bdb, bconn := b.client()
	c := testCtx(t)
	if _, err := adb.CreateTable(c, &pb.CreateTableRequest{Table: &pb.Table{
		Name:       "reg",
		Columns:    []*pb.Column{{Name: "k", Type: pb.ColumnType_COLUMN_TYPE_INT64}, {Name: "v", Type: pb.ColumnType_COLUMN_TYPE_INT64}},
		PrimaryKey: []string{"k"},
	}}); err != nil {
		t.Fatal(err)
	}
	const keys = 16
	for k := range int64(keys) {
		if _, err := adb.Insert(c, &pb.InsertRequest{Table: "reg", Row: &pb.Row{Values: []*pb.Value{vInt(k), vInt(0)}}}); err != nil {
			t.Fatal(err)
		}
	}

	var (
		target  atomic.Pointer[pb.DatabaseServiceClient] // where clients go: the primary of the moment
		mu      sync.Mutex
		history []porcupine.Operation
		next    atomic.Int64
		wg      sync.WaitGroup
	)
	target.Store(&adb)
	start := time.Now()
	now := func() int64 { return int64(time.Since(start)) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for client := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(client), 7))
			// backOff waits, after a failed call to db, until the clients
			// are sent elsewhere (or a moment has passed), rather than
			// piling up writes of unknown outcome on a dead node.
			backOff := func(db pb.DatabaseServiceClient) {
				for i := 0; i < 50 && *target.Load() == db && ctx.Err() == nil; i++ {
					time.Sleep(time.Millisecond)
				}
			}
			for ctx.Err() == nil {
				db := *target.Load()
				failed := false
				in := regInput{key: r.Int64N(keys), write: r.IntN(2) == 0}
				call := now()
				cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
				op := porcupine.Operation{ClientId: client, Input: in, Call: call}
				if in.write {
					in.v = next.Add(1)
					op.Input = in
					resp, err := db.Upsert(cctx, &pb.UpsertRequest{Table: "reg", Row: &pb.Row{Values: []*pb.Value{vInt(in.key), vInt(in.v)}}})
					op.Return = now()
					if err != nil || resp.GetDegraded() {
						op.Return = math.MaxInt64 // it may or may not have happened
						failed = true
					}
				} else {
					resp, err := db.Get(cctx, &pb.GetRequest{Table: "reg", Key: []*pb.Value{vInt(in.key)}})
					op.Return = now()
					if err != nil {
						ccancel()
						backOff(db)
						continue // a failed read shows nothing
					}
					op.Output = resp.GetRow().GetValues()[1].GetInt64()
				}
				ccancel()
				mu.Lock()
				history = append(history, op)
				mu.Unlock()
				if failed {
					backOff(db)
				}
			}
		}()
	}
	// The standby stops for a moment (SIGSTOP), so the primary has
	// commits it has not shipped, or not had applied, when it dies.
	time.Sleep(400 * time.Millisecond)
	if err := b.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	a.kill()
	if err := b.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewAdminServiceClient(bconn).Promote(testCtx(t), &pb.PromoteRequest{}); err != nil {
		t.Fatal(err)
	}
	target.Store(&bdb)
	time.Sleep(500 * time.Millisecond)
	cancel()
	wg.Wait()

	writes, reads, unknown := 0, 0, 0
	for _, op := range history {
		if op.Input.(regInput).write {
			writes++
			if op.Return == math.MaxInt64 {
				unknown++
			}
		} else {
			reads++
		}
	}
	t.Logf("%d writes (%d of unknown outcome), %d reads", writes, unknown, reads)
	if writes < 50 || reads < 50 {
		t.Fatalf("too little traffic: %d writes, %d reads", writes, reads)
	}
	res := porcupine.CheckOperationsTimeout(registers, history, 20*time.Second)
	if res != porcupine.Ok {
		t.Fatalf("the history of %d writes and %d reads is %s", writes, reads, res)
	}
	t.Logf("linearizable: %d writes and %d reads across the failover", writes, reads)
}
