package durability

import "sync"

// Ring keeps a no-log node's most recent commit records in memory,
// bounded by their total size, oldest dropped first: the log a standby
// catches up from when the primary writes none. Records are added in LSN
// order. It is safe for concurrent use.
type Ring struct {
	mu    sync.Mutex
	max   int64
	bytes int64
	recs  []ringRecord // a circular buffer: head is the oldest, n records
	head  int
	n     int
}

type ringRecord struct {
	lsn  uint64
	body []byte
}

// NewRing returns a ring holding at most maxBytes of record bodies (and
// always the newest record, however large).
func NewRing(maxBytes int64) *Ring { return &Ring{max: maxBytes} }

// Add appends the record at lsn; the ring owns body from then on.
func (r *Ring) Add(lsn uint64, body []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && r.bytes+int64(len(body)) > r.max {
		old := &r.recs[r.head]
		r.bytes -= int64(len(old.body))
		*old = ringRecord{}
		r.head = (r.head + 1) % len(r.recs)
		r.n--
	}
	if r.n == len(r.recs) {
		grown := make([]ringRecord, max(16, 2*len(r.recs)))
		for i := 0; i < r.n; i++ {
			grown[i] = r.recs[(r.head+i)%len(r.recs)]
		}
		r.recs, r.head = grown, 0
	}
	r.recs[(r.head+r.n)%len(r.recs)] = ringRecord{lsn: lsn, body: body}
	r.n++
	r.bytes += int64(len(body))
}

// Since calls fn with each record after LSN after, oldest first, until fn
// returns false. It returns false, calling fn not at all, when the ring no
// longer holds the record right after after (it was dropped to bound the
// ring): a reader that far behind must start over from an image.
func (r *Ring) Since(after uint64, fn func(lsn uint64, body []byte) bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == 0 {
		return true
	}
	if oldest := r.recs[r.head].lsn; after+1 < oldest {
		return false
	}
	for i := 0; i < r.n; i++ {
		rec := r.recs[(r.head+i)%len(r.recs)]
		if rec.lsn > after && !fn(rec.lsn, rec.body) {
			break
		}
	}
	return true
}

// Len returns the number of records held and their total size.
func (r *Ring) Len() (records int, bytes int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, r.bytes
}
