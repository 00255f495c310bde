// Package tatp is the TATP benchmark (Telecom Application Transaction
// Processing) as ../shared/TATP.md defines it for mmdb: the schema, a
// parallel loader and the seven-transaction mix, run in-process against
// the mem engine.
package tatp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"

	"github.com/mmdb/mmdb/mem"
)

// Tx identifies one of the seven TATP transactions.
type Tx int

// The TATP transactions, in the order of the mix table.
const (
	GetSubscriberData Tx = iota
	GetNewDestination
	GetAccessData
	UpdateSubscriberData
	UpdateLocation
	InsertCallForwarding
	DeleteCallForwarding
	NumTx
)

var txNames = [NumTx]string{
	"GET_SUBSCRIBER_DATA", "GET_NEW_DESTINATION", "GET_ACCESS_DATA",
	"UPDATE_SUBSCRIBER_DATA", "UPDATE_LOCATION", "INSERT_CALL_FORWARDING", "DELETE_CALL_FORWARDING",
}

func (t Tx) String() string { return txNames[t] }

// Share is t's share of the mix, between 0 and 1.
func (t Tx) Share() float64 {
	if t == 0 {
		return float64(mix[0]) / 100
	}
	return float64(mix[t]-mix[t-1]) / 100
}

// mix is the cumulative share of each transaction, in percent.
var mix = [NumTx]int{35, 45, 80, 82, 96, 98, 100}

// Tables returns the TATP schema.
func Tables() []mem.TableDef {
	sub := []mem.ColumnDef{
		{Name: "s_id", Type: mem.TypeUint64},
		{Name: "sub_nbr", Type: mem.TypeString, MaxLen: 15},
	}
	for _, group := range []struct {
		prefix string
		typ    mem.Type
	}{{"bit_", mem.TypeBool}, {"hex_", mem.TypeUint64}, {"byte2_", mem.TypeUint64}} {
		for i := 1; i <= 10; i++ {
			sub = append(sub, mem.ColumnDef{Name: fmt.Sprintf("%s%d", group.prefix, i), Type: group.typ})
		}
	}
	sub = append(sub, mem.ColumnDef{Name: "msc_location", Type: mem.TypeUint64}, mem.ColumnDef{Name: "vlr_location", Type: mem.TypeUint64})
	return []mem.TableDef{
		{
			Name: "subscriber", Columns: sub, PrimaryKey: []string{"s_id"},
			Indexes: []mem.IndexDef{{Name: "by_sub_nbr", Columns: []string{"sub_nbr"}, Unique: true, Kind: mem.Hash}},
		},
		{
			Name: "access_info",
			Columns: []mem.ColumnDef{
				{Name: "s_id", Type: mem.TypeUint64}, {Name: "ai_type", Type: mem.TypeUint64},
				{Name: "data1", Type: mem.TypeUint64}, {Name: "data2", Type: mem.TypeUint64},
				{Name: "data3", Type: mem.TypeString, MaxLen: 3}, {Name: "data4", Type: mem.TypeString, MaxLen: 5},
			},
			PrimaryKey: []string{"s_id", "ai_type"},
		},
		{
			Name: "special_facility",
			Columns: []mem.ColumnDef{
				{Name: "s_id", Type: mem.TypeUint64}, {Name: "sf_type", Type: mem.TypeUint64},
				{Name: "is_active", Type: mem.TypeBool}, {Name: "error_cntrl", Type: mem.TypeUint64},
				{Name: "data_a", Type: mem.TypeUint64}, {Name: "data_b", Type: mem.TypeString, MaxLen: 5},
			},
			// Every access path of the mix is an equality lookup, so every
			// index is a hash index: INSERT_CALL_FORWARDING lists a
			// subscriber's types through by_s_id.
			PrimaryKey: []string{"s_id", "sf_type"},
			Indexes:    []mem.IndexDef{{Name: "by_s_id", Columns: []string{"s_id"}, Kind: mem.Hash}},
		},
		{
			Name: "call_forwarding",
			Columns: []mem.ColumnDef{
				{Name: "s_id", Type: mem.TypeUint64}, {Name: "sf_type", Type: mem.TypeUint64},
				{Name: "start_time", Type: mem.TypeUint64}, {Name: "end_time", Type: mem.TypeUint64},
				{Name: "numberx", Type: mem.TypeString, MaxLen: 15},
			},
			// GET_NEW_DESTINATION reads the (at most 3) rows of one
			// (s_id, sf_type) through by_type and filters on start_time.
			PrimaryKey: []string{"s_id", "sf_type", "start_time"},
			Indexes:    []mem.IndexDef{{Name: "by_type", Columns: []string{"s_id", "sf_type"}, Kind: mem.Hash}},
		},
	}
}

// DB is a loaded TATP database with its table handles and column ordinals.
type DB struct {
	DB          *mem.DB
	P           uint64 // subscribers
	sub, ai, sf *mem.Table
	cf          *mem.Table
	subNbrIx    int
	sfBySID     int
	cfByType    int
	bit1, vlr   int
	sfActive    int
	sfDataA     int
	cfStart     int
	cfEnd       int
	cfNumberx   int
}

// Create makes the TATP tables in db and returns the handles for p
// subscribers (loaded separately by Load).
func Create(db *mem.DB, p uint64) (*DB, error) {
	if p == 0 {
		return nil, errors.New("tatp: need at least one subscriber")
	}
	for _, def := range Tables() {
		if _, err := db.CreateTable(def); err != nil {
			return nil, fmt.Errorf("tatp: create %s: %w", def.Name, err)
		}
	}
	return Open(db, p)
}

// Populated returns a new database without a log holding p subscribers,
// loaded on all cores (seed 1): what benchmarks of whole databases start
// from.
func Populated(p uint64) (*DB, error) {
	d, err := Create(mem.Open(mem.Options{}), p)
	if err != nil {
		return nil, err
	}
	if err := d.Load(runtime.GOMAXPROCS(0), 1, nil); err != nil {
		return nil, err
	}
	return d, nil
}

// Open returns the handles of existing TATP tables in db.
func Open(db *mem.DB, p uint64) (*DB, error) {
	d := &DB{DB: db, P: p}
	var err error
	must := func(f func() error) {
		if err == nil {
			err = f()
		}
	}
	table := func(name string, dst **mem.Table) func() error {
		return func() (e error) { *dst, e = db.Table(name); return e }
	}
	col := func(t **mem.Table, name string, dst *int) func() error {
		return func() (e error) { *dst, e = (*t).Column(name); return e }
	}
	must(table("subscriber", &d.sub))
	must(table("access_info", &d.ai))
	must(table("special_facility", &d.sf))
	must(table("call_forwarding", &d.cf))
	must(func() (e error) { d.subNbrIx, e = d.sub.Index("by_sub_nbr"); return e })
	must(func() (e error) { d.sfBySID, e = d.sf.Index("by_s_id"); return e })
	must(func() (e error) { d.cfByType, e = d.cf.Index("by_type"); return e })
	must(col(&d.sub, "bit_1", &d.bit1))
	must(col(&d.sub, "vlr_location", &d.vlr))
	must(col(&d.sf, "is_active", &d.sfActive))
	must(col(&d.sf, "data_a", &d.sfDataA))
	must(col(&d.cf, "start_time", &d.cfStart))
	must(col(&d.cf, "end_time", &d.cfEnd))
	must(col(&d.cf, "numberx", &d.cfNumberx))
	if err != nil {
		return nil, fmt.Errorf("tatp: %w", err)
	}
	return d, nil
}

func nurandA(p uint64) uint64 {
	switch {
	case p <= 1_000_000:
		return 65535
	case p <= 10_000_000:
		return 1048575
	}
	return 2097151
}

// SubNbr is the 15-digit subscriber number of s_id: s_id in decimal,
// zero-padded (s_id < 10^15).
func SubNbr(sid uint64) string {
	var b [15]byte
	for i := len(b) - 1; i >= 0; i-- {
		b[i] = byte('0' + sid%10)
		sid /= 10
	}
	return string(b[:])
}

func letters(r *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('A' + r.IntN(26))
	}
	return string(b)
}

// distinct returns k distinct values from 1..4 (k in 1..4).
func distinct(r *rand.Rand, k int) []uint64 {
	perm := r.Perm(4)
	out := make([]uint64, k)
	for i := range out {
		out[i] = uint64(perm[i] + 1)
	}
	return out
}

// startTimes returns k distinct start times from {0, 8, 16}.
func startTimes(r *rand.Rand, k int) []uint64 {
	perm := r.Perm(3)
	out := make([]uint64, k)
	for i := range out {
		out[i] = uint64(8 * perm[i])
	}
	return out
}

// Load inserts p subscribers and their rows with the given number of
// parallel loaders, in transactions of batch subscribers. progress, if
// not nil, is called with the number of subscribers loaded so far.
func (d *DB) Load(workers int, seed uint64, progress func(done uint64)) error {
	return inBatches(d.P, 500, workers, progress, func(start, end uint64) error {
		return d.loadRange(newGen(d.P, seed), start, end)
	})
}

// inBatches loads subscribers 1..p in batches of size, calling load for
// each from workers goroutines, until all are loaded or one call fails;
// it returns the first failure. progress, if not nil, is called with the
// number of subscribers loaded so far after each batch.
func inBatches(p, size uint64, workers int, progress func(done uint64), load func(start, end uint64) error) error {
	var next, done uint64
	var mu sync.Mutex
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < max(workers, 1); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				mu.Lock()
				start := next + 1
				next += size
				failed := firstErr != nil
				mu.Unlock()
				if failed || start > p {
					return
				}
				end := min(start+size-1, p)
				err := load(start, end)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				done += end - start + 1
				n := done
				mu.Unlock()
				if progress != nil && err == nil {
					progress(n)
				}
			}
		}()
	}
	wg.Wait()
	return firstErr
}

func (d *DB) loadRange(g *gen, start, end uint64) error {
	tx := d.DB.Begin()
	defer tx.Rollback()
	tables := [numTables]*mem.Table{d.sub, d.ai, d.sf, d.cf}
	for sid := start; sid <= end; sid++ {
		err := g.subscriber(sid, func(t int, row []mem.Value) error {
			if err := tx.Insert(tables[t], row); err != nil {
				return fmt.Errorf("tatp: load %s of subscriber %d: %w", tableNames[t], sid, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if _, err := tx.Commit(); err != nil {
		return fmt.Errorf("tatp: load subscribers %d-%d: %w", start, end, err)
	}
	return nil
}

// The tables, in the order of Tables.
const (
	tSubscriber = iota
	tAccessInfo
	tSpecialFacility
	tCallForwarding
	numTables
)

var tableNames = [numTables]string{"subscriber", "access_info", "special_facility", "call_forwarding"}

// gen makes the rows of a database of p subscribers. Each subscriber's
// rows come from a random stream of their own, seeded by the load's seed
// and the s_id, so the database depends on the seed alone: not on how the
// loaders split the work, nor on which loader (in-process or over gRPC).
type gen struct {
	src     *rand.PCG
	r       *rand.Rand
	seed, p uint64
	row     []mem.Value
}

func newGen(p, seed uint64) *gen {
	src := rand.NewPCG(0, 0)
	return &gen{src: src, r: rand.New(src), seed: seed, p: p, row: make([]mem.Value, 0, 34)}
}

// subscriber makes the rows of subscriber sid, in load order, and hands
// each to emit with its table. A row is valid only during its emit call.
func (g *gen) subscriber(sid uint64, emit func(table int, row []mem.Value) error) error {
	g.src.Seed(g.seed, sid)
	r, p := g.r, g.p
	row := append(g.row[:0], mem.Uint64(sid), mem.String(SubNbr(sid)))
	for i := 0; i < 10; i++ {
		row = append(row, mem.Bool(r.IntN(2) == 1))
	}
	for i := 0; i < 10; i++ {
		row = append(row, mem.Uint64(uint64(r.IntN(16))))
	}
	for i := 0; i < 10; i++ {
		row = append(row, mem.Uint64(uint64(r.IntN(256))))
	}
	row = append(row, mem.Uint64(1+r.Uint64N(1<<32-1)), mem.Uint64(1+r.Uint64N(1<<32-1)))
	if err := emit(tSubscriber, row); err != nil {
		return err
	}
	for _, t := range distinct(r, 1+r.IntN(4)) {
		row = append(row[:0], mem.Uint64(sid), mem.Uint64(t),
			mem.Uint64(uint64(r.IntN(256))), mem.Uint64(uint64(r.IntN(256))),
			mem.String(letters(r, 3)), mem.String(letters(r, 5)))
		if err := emit(tAccessInfo, row); err != nil {
			return err
		}
	}
	for _, t := range distinct(r, 1+r.IntN(4)) {
		row = append(row[:0], mem.Uint64(sid), mem.Uint64(t),
			mem.Bool(r.IntN(100) < 85), mem.Uint64(uint64(r.IntN(256))),
			mem.Uint64(uint64(r.IntN(256))), mem.String(letters(r, 5)))
		if err := emit(tSpecialFacility, row); err != nil {
			return err
		}
		for _, st := range startTimes(r, r.IntN(4)) {
			row = append(row[:0], mem.Uint64(sid), mem.Uint64(t), mem.Uint64(st),
				mem.Uint64(st+1+uint64(r.IntN(8))), mem.String(SubNbr(1+r.Uint64N(p))))
			if err := emit(tCallForwarding, row); err != nil {
				return err
			}
		}
	}
	return nil
}

// Client runs the TATP mix. Each goroutine needs its own Client.
type Client struct {
	picker
	// Wait, if set, is called with Run's context and each commit's LSN
	// before Run returns, as a server waits for durability before it
	// replies.
	Wait func(ctx context.Context, lsn uint64) error
	d    *DB
	key  []mem.Value
	row  []mem.Value
	set  []mem.ColumnValue
	sink uint64 // keeps reads from being optimized away
}

// NewClient returns a client with its own random stream.
func (d *DB) NewClient(seed uint64) *Client {
	return &Client{picker: newPicker(d.P, seed), d: d, key: make([]mem.Value, 3), set: make([]mem.ColumnValue, 1)}
}

// picker draws a client's random choices: transactions, subscribers and
// the parameters of each transaction.
type picker struct {
	r    *rand.Rand
	p, a uint64
}

func newPicker(p, seed uint64) picker {
	return picker{r: rand.New(rand.NewPCG(seed, 0x7a7b)), p: p, a: nurandA(p)}
}

// sid draws a subscriber by NURand.
func (c *picker) sid() uint64 {
	return ((c.r.Uint64N(c.a+1) | (1 + c.r.Uint64N(c.p))) % c.p) + 1
}

// Next picks the next transaction of the mix.
func (c *picker) Next() Tx {
	p := c.r.IntN(100)
	for t := Tx(0); t < NumTx; t++ {
		if p < mix[t] {
			return t
		}
	}
	return NumTx - 1
}

// Run executes one transaction of kind t, retrying serialization
// conflicts. ok reports whether it succeeded in the TATP sense (found its
// rows, inserted without a duplicate, ...). ctx ends Wait's wait; the
// transaction itself never blocks.
func (c *Client) Run(ctx context.Context, t Tx) (ok bool, err error) {
	for attempt := 0; ; attempt++ {
		ok, err = c.run(ctx, t)
		if !errors.Is(err, mem.ErrConflict) || attempt == 100 {
			return ok, err
		}
	}
}

func (c *Client) run(ctx context.Context, t Tx) (bool, error) {
	d := c.d
	tx := d.DB.Begin()
	defer tx.Rollback()
	sid := c.sid()
	var ok bool
	var err error
	switch t {
	case GetSubscriberData:
		var r mem.Record
		if r, ok, err = tx.Get(d.sub, c.keys(mem.Uint64(sid))); ok {
			for col := 0; col < r.NumColumns(); col++ {
				if col != 1 {
					c.sink += r.Uint64(col)
				}
			}
		}
	case GetNewDestination:
		ok, err = c.getNewDestination(tx, sid)
	case GetAccessData:
		var r mem.Record
		if r, ok, err = tx.Get(d.ai, c.keys(mem.Uint64(sid), mem.Uint64(1+c.r.Uint64N(4)))); ok {
			c.sink += r.Uint64(2) + r.Uint64(3) + uint64(len(r.Str(4))+len(r.Str(5)))
		}
	case UpdateSubscriberData:
		ok, err = c.updateSubscriberData(tx, sid)
	case UpdateLocation:
		ok, err = c.updateLocation(tx, sid)
	case InsertCallForwarding:
		ok, err = c.insertCallForwarding(tx, sid)
	case DeleteCallForwarding:
		ok, err = c.deleteCallForwarding(tx, sid)
	}
	if err != nil {
		return false, err
	}
	if !ok {
		return false, nil // rolled back by the deferred Rollback
	}
	lsn, err := tx.Commit()
	if errors.Is(err, mem.ErrDuplicate) {
		return false, nil // a concurrent INSERT_CALL_FORWARDING took the key
	}
	if err == nil && lsn != 0 && c.Wait != nil {
		err = c.Wait(ctx, lsn)
	}
	return err == nil, err
}

func (c *Client) keys(v ...mem.Value) []mem.Value {
	c.key = append(c.key[:0], v...)
	return c.key
}

func (c *Client) getNewDestination(tx *mem.Tx, sid uint64) (bool, error) {
	d := c.d
	sfType := 1 + c.r.Uint64N(4)
	st := uint64(8 * c.r.IntN(3))
	et := 1 + c.r.Uint64N(24)
	sf, found, err := tx.Get(d.sf, c.keys(mem.Uint64(sid), mem.Uint64(sfType)))
	if err != nil || !found || !sf.Bool(d.sfActive) {
		return false, err
	}
	n := 0
	err = tx.Scan(d.cf, mem.ScanSpec{Index: d.cfByType, Prefix: c.keys(mem.Uint64(sid), mem.Uint64(sfType))}, func(r mem.Record) bool {
		if r.Uint64(d.cfStart) <= st && et < r.Uint64(d.cfEnd) {
			c.sink += uint64(len(r.Str(d.cfNumberx)))
			n++
		}
		return true
	})
	return n > 0, err
}

func (c *Client) updateSubscriberData(tx *mem.Tx, sid uint64) (bool, error) {
	d := c.d
	c.set[0] = mem.ColumnValue{Column: d.bit1, Value: mem.Bool(c.r.IntN(2) == 1)}
	if err := tx.Update(d.sub, c.keys(mem.Uint64(sid)), c.set); err != nil {
		return false, err
	}
	c.set[0] = mem.ColumnValue{Column: d.sfDataA, Value: mem.Uint64(uint64(c.r.IntN(256)))}
	err := tx.Update(d.sf, c.keys(mem.Uint64(sid), mem.Uint64(1+c.r.Uint64N(4))), c.set)
	if errors.Is(err, mem.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// bySubNbr finds a subscriber's s_id through the sub_nbr index.
func (c *Client) bySubNbr(tx *mem.Tx, sid uint64) (uint64, bool, error) {
	r, found, err := tx.GetBy(c.d.sub, c.d.subNbrIx, c.keys(mem.String(SubNbr(sid))))
	if err != nil || !found {
		return 0, false, err
	}
	return r.Uint64(0), true, nil
}

func (c *Client) updateLocation(tx *mem.Tx, sid uint64) (bool, error) {
	id, found, err := c.bySubNbr(tx, sid)
	if err != nil || !found {
		return false, err
	}
	c.set[0] = mem.ColumnValue{Column: c.d.vlr, Value: mem.Uint64(1 + c.r.Uint64N(1<<32-1))}
	err = tx.Update(c.d.sub, c.keys(mem.Uint64(id)), c.set)
	return err == nil, err
}

func (c *Client) insertCallForwarding(tx *mem.Tx, sid uint64) (bool, error) {
	d := c.d
	id, found, err := c.bySubNbr(tx, sid)
	if err != nil || !found {
		return false, err
	}
	sfType := 1 + c.r.Uint64N(4)
	st := uint64(8 * c.r.IntN(3))
	hasType := false
	err = tx.Scan(d.sf, mem.ScanSpec{Index: d.sfBySID, Prefix: c.keys(mem.Uint64(id))}, func(r mem.Record) bool {
		hasType = hasType || r.Uint64(1) == sfType
		return true
	})
	if err != nil || !hasType {
		return false, err
	}
	c.row = append(c.row[:0], mem.Uint64(id), mem.Uint64(sfType), mem.Uint64(st),
		mem.Uint64(st+1+uint64(c.r.IntN(8))), mem.String(SubNbr(1+c.r.Uint64N(d.P))))
	err = tx.Insert(d.cf, c.row)
	if errors.Is(err, mem.ErrDuplicate) {
		return false, nil
	}
	return err == nil, err
}

func (c *Client) deleteCallForwarding(tx *mem.Tx, sid uint64) (bool, error) {
	id, found, err := c.bySubNbr(tx, sid)
	if err != nil || !found {
		return false, err
	}
	err = tx.Delete(c.d.cf, c.keys(mem.Uint64(id), mem.Uint64(1+c.r.Uint64N(4)), mem.Uint64(uint64(8*c.r.IntN(3)))))
	if errors.Is(err, mem.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}
