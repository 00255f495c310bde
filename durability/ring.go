package durability

import (
	"math"
	"math/bits"
	"sync"
	"time"
)

// Ring keeps a node's most recent commit records in memory, bounded by
// their total size, oldest dropped first: what a standby catches up from
// (package replica). Records are added in LSN order without gaps. It is
// safe for concurrent use.
type Ring struct {
	mu    sync.Mutex
	base  uint64 // the LSN the ring started after: an empty ring holds everything after it
	began int64  // when the ring was made, in Unix nanoseconds
	max   int64
	bytes int64
	total uint64 // bytes of every body ever added
	// The records, oldest first, in chunks of ringChunk: the i-th is
	// chunks[(head+i)/ringChunk][(head+i)%ringChunk]. The ring grows and
	// shrinks a chunk at a time and never copies its records, since Add
	// runs under the log's lock (Store.KeepRing).
	chunks  [][]Record
	head    int // the oldest record's place in chunks[0]
	n       int
	spare   []Record      // a chunk dropped from the front, for the next one at the back
	changed chan struct{} // closed at the next Add, if someone waits
}

// ringChunk is the number of records in a chunk of a Ring.
const ringChunk = 1024

// Record is a commit record in the ring.
type Record struct {
	LSN  uint64
	Body []byte // the encoded redo (mem.Redo); never changed once added
	At   int64  // when it was added, in Unix nanoseconds
	sum  uint64 // the ring's total of body bytes added, this one's included
}

// NewRing returns a ring holding at most maxBytes of record bodies (and
// always the newest record, however large), whose first record will
// follow LSN after.
func NewRing(maxBytes int64, after uint64) *Ring {
	return &Ring{max: maxBytes, base: after, began: time.Now().UnixNano()}
}

// Add appends the record at lsn, which must follow the last one; the ring
// owns body from then on.
func (r *Ring) Add(lsn uint64, body []byte) {
	now := time.Now().UnixNano()
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && r.bytes+int64(len(body)) > r.max {
		old := &r.chunks[0][r.head]
		r.bytes -= int64(len(old.Body))
		*old = Record{}
		r.head++
		r.n--
		if r.head == ringChunk {
			r.spare, r.chunks[0] = r.chunks[0], nil
			r.chunks, r.head = r.chunks[1:], 0
		}
	}
	end := r.head + r.n
	if end == len(r.chunks)*ringChunk {
		c := r.spare
		if c == nil {
			c = make([]Record, ringChunk)
		}
		r.chunks, r.spare = append(r.chunks, c), nil
	}
	r.total += uint64(len(body))
	r.chunks[end/ringChunk][end%ringChunk] = Record{LSN: lsn, Body: body, At: now, sum: r.total}
	r.n++
	r.bytes += int64(len(body))
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// Read appends to dst the records after LSN after, oldest first, until
// their bodies reach maxBytes (at least one record is returned when there
// is one). ok is false, and nothing is appended, when the ring no longer
// holds the record right after after: it was dropped to bound the ring,
// and a reader that far behind must start over from an image.
func (r *Ring) Read(dst []Record, after uint64, maxBytes int) (_ []Record, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return dst, after >= r.base
	}
	oldest := r.at(0).LSN
	if after+1 < oldest {
		return dst, false
	}
	size := 0
	for i := int(after + 1 - oldest); i < r.n && (size < maxBytes || size == 0); i++ {
		rec := r.at(i)
		dst = append(dst, rec)
		size += len(rec.Body)
	}
	return dst, true
}

// Wait returns a channel that is closed once a record after LSN after is
// added; it is closed already if the ring holds one.
func (r *Ring) Wait(after uint64) <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n > 0 && r.at(r.n-1).LSN > after {
		return closed
	}
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return r.changed
}

var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

// Last returns the newest LSN the ring holds, or the one its records
// follow when it holds none.
func (r *Ring) Last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return r.base
	}
	return r.at(r.n - 1).LSN
}

// Oldest returns the oldest LSN the ring holds, or would hold when empty.
func (r *Ring) Oldest() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return r.base + 1
	}
	return r.at(0).LSN
}

// BytesBetween returns the size of the bodies of the records after LSN
// after up to upto. Records the ring no longer holds count at the
// average size of those it holds, and records it does not hold yet (or
// any, when it holds none: right after a restart) count as nothing.
func (r *Ring) BytesBetween(after, upto uint64) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return 0
	}
	oldest, newest := r.at(0), r.at(r.n-1)
	upto = min(upto, newest.LSN)
	if upto <= after {
		return 0
	}
	var held uint64
	if upto >= oldest.LSN {
		from := r.at(int(max(after+1, oldest.LSN) - oldest.LSN))
		held = r.at(int(upto-oldest.LSN)).sum - from.sum + uint64(len(from.Body))
	}
	if after+1 >= oldest.LSN {
		return held
	}
	// The dropped records at the average size, without overflow.
	hi, lo := bits.Mul64(min(upto, oldest.LSN-1)-after, uint64(r.bytes))
	if hi >= uint64(r.n) {
		return math.MaxUint64
	}
	dropped, _ := bits.Div64(hi, lo, uint64(r.n))
	if dropped > math.MaxUint64-held {
		return math.MaxUint64
	}
	return held + dropped
}

// AddedAt returns when the record at lsn was added, if the ring holds
// it. For one older than the ring holds (dropped, or committed before
// the ring was made) it returns a time the record is at least as old as:
// the ring's oldest record's, or when the ring was made if it holds none.
// ok is false for a record not added yet.
func (r *Ring) AddedAt(lsn uint64) (_ time.Time, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return time.Unix(0, r.began), lsn <= r.base
	}
	oldest := r.at(0)
	switch {
	case lsn < oldest.LSN:
		return time.Unix(0, oldest.At), true
	case lsn-oldest.LSN >= uint64(r.n):
		return time.Time{}, false
	}
	return time.Unix(0, r.at(int(lsn-oldest.LSN)).At), true
}

// at returns the i-th record from the oldest; the caller holds mu.
func (r *Ring) at(i int) Record {
	j := r.head + i
	return r.chunks[j/ringChunk][j%ringChunk]
}
