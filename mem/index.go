package mem

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/tidwall/btree"
)

// Indexes map encoded keys (see key.go) to RIDs. Neither kind checks that
// an entry's row still has the entry's key: that is the caller's job, done
// by reading the row (the row is the truth; an entry can be briefly stale
// while a committing transaction holds the row's lock). Both kinds keep
// per-row data out of pointer-bearing memory as far as they can:
//
//   - hashIndex stores {hash, RID} pairs in flat arrays, no keys at all: a
//     lookup verifies candidates against the rows. The collector never
//     scans it. Each RID carries where its row's bytes were in their page
//     when the entry was written or last hinted (rehint), so that a lookup
//     fetches the bytes at the same time as the row's TID and slot words,
//     not after them: one dependent cache miss fewer per read while the
//     hint holds, and a wasted prefetch when it no longer does. A key
//     with many rows (a non-unique index on a column with few distinct
//     values) keeps overflowAt of its entries in the array and the rest
//     in a small B-tree beside it, so that adding or removing one of its
//     entries costs a bounded probe, not a walk over all of them.
//   - orderedIndex is a B-tree (tidwall/btree) of {key, RID} whose keys are
//     carved out of large shared byte slabs, so the collector sees one
//     string header per entry in a node's item array but only a few slab
//     objects.

type index interface {
	// lookup appends to dst the RIDs of entries that may have the key.
	lookup(key []byte, dst []uint64) []uint64
	// stamp returns a number that changes whenever an entry lookup(key)
	// could return comes or goes: two stamps taken around a lookup are
	// equal only if the entries it returned held from the first to the
	// second.
	stamp(key []byte) uint64
	// claim adds key->rid after check approves every existing candidate,
	// atomically with respect to other claims of the key.
	claim(key []byte, rid uint64, check func(rid uint64) error) error
	// ensure adds key->rid unless the index holds that entry already,
	// after check, if not nil, approves every candidate of the key (the
	// entry itself too, if there), atomically with respect to claims of
	// the key. An index being built takes the table's rows with it
	// (filler).
	ensure(key []byte, rid uint64, check func(rid uint64) error) error
	add(key []byte, rid uint64)
	del(key []byte, rid uint64)
	// rehint notes, if the index keeps such hints, that the row at rid,
	// whose key is key, has new bytes (an update wrote a new version).
	rehint(key []byte, rid uint64)
	// prefetch asks for the memory a lookup of key starts with to be
	// brought into cache, without waiting for it.
	prefetch(key []byte)
	// memBytes estimates the memory the index uses.
	memBytes() int64
	entries() int64
}

const hashShards = 256

// hslot is one hash entry. Readers load its words without a lock, so
// writers store them atomically. The rid word is the RID in its low
// ridBits bits and, above them, the offset of the row's bytes in its page
// as they were when the entry was written (a hint: see hashIndex.word).
type hslot struct{ h, rid atomic.Uint64 }

// ridBits is the width of a RID in an hslot's rid word: 32 bits of page
// (heap.addPage stops short of 2^32 pages) and 16 of slot. The 15 bits
// above hold a byte offset in a page (PageSize is 2^15).
const (
	ridBits = 48
	ridMask = uint64(1)<<ridBits - 1
)

const (
	hEmpty = 0
	hTomb  = 1
	hUsed  = uint64(1) << 63
)

// overMark, the top bit of an entry's rid word, says that its shard's
// overflow tree may hold more entries with its hash. Either every entry
// of a hash in the slot array carries it or none does; it may outlive
// the tree's last entry of the hash (a lookup then finds none there).
const overMark = uint64(1) << 63

// overflowAt is how many entries of one hash a shard's slot array holds
// before the rest go to its overflow tree. Linear probing keeps equal
// hashes in one run, so without the tree every entry added under a key
// would walk past all the key's entries: quadratic in its rows.
const overflowAt = 8

// hintOf returns the offset hint of an entry's rid word.
func hintOf(w uint64) int { return int(w>>ridBits) & (PageSize - 1) }

// oentry is an entry in an overflow tree: a hash and a rid word, ordered
// by hash, then RID (the hint does not count).
type oentry struct{ h, w uint64 }

func oentryLess(a, b oentry) bool {
	if a.h != b.h {
		return a.h < b.h
	}
	return a.w&ridMask < b.w&ridMask
}

// overflow holds a shard's entries past overflowAt per hash. Writers
// change it holding the shard's mu and made its seq odd, and take mu here
// too; lock-free readers of the shard read it under mu's read lock and,
// as for the slot array, keep what they read only if seq did not move.
type overflow struct {
	mu   sync.RWMutex
	tree *btree.BTreeG[oentry]
}

// each calls fn with the tree's entries of hash h until fn returns
// false. The caller holds mu (either way) or is the shard's writer.
func (o *overflow) each(h uint64, fn func(e oentry) bool) {
	o.tree.Ascend(oentry{h: h}, func(e oentry) bool { return e.h == h && fn(e) })
}

// hashShard is an open-addressing table (linear probing) guarded by a
// seqlock: writers serialize on mu and make seq odd while they change the
// table; readers take no lock, probe, and retry if seq moved. A resize
// builds a new slot array and publishes it, so a reader never probes a
// half-copied one.
type hashShard struct {
	mu    sync.Mutex
	seq   atomic.Uint64
	slots atomic.Pointer[[]hslot] // power-of-two length
	used  int                     // guarded by mu
	tombs int
	over  atomic.Pointer[overflow] // nil until a hash first overflows; set under mu
	floor int                      // the array shrinks to no fewer slots (reserve); guarded by mu
	_     [8]byte                  // keep neighbouring shards off one cache line
}

type hashIndex struct {
	heap   *heap // the table's rows, read for the offset hints
	seed   maphash.Seed
	shards [hashShards]hashShard
	count  atomic.Int64
}

func newHashIndex(h *heap) *hashIndex {
	x := &hashIndex{heap: h, seed: maphash.MakeSeed()}
	for i := range x.shards {
		slots := make([]hslot, 8)
		x.shards[i].slots.Store(&slots)
	}
	return x
}

func (x *hashIndex) hash(key []byte) (uint64, *hashShard) {
	h := maphash.Bytes(x.seed, key) | hUsed
	return h, &x.shards[h&(hashShards-1)]
}

// word returns the rid word of an entry for the row at rid: the RID and
// the offset of the row's bytes now. The row is in the heap; unless the
// caller owns it or nothing else writes the table yet, the offset may be
// stale by the time it is stored (a hint, so no harm).
func (x *hashIndex) word(rid uint64) uint64 {
	return rid | uint64(x.heap.offset(rid))<<ridBits
}

// find appends the rid words of entries with hash h in slots; see also
// hashShard.candidates.
func find(slots []hslot, h uint64, dst []uint64) []uint64 {
	mask := uint64(len(slots) - 1)
	for i, n := (h>>8)&mask, 0; n < len(slots); i, n = (i+1)&mask, n+1 {
		e := slots[i].h.Load()
		if e == hEmpty {
			break
		}
		if e == h {
			dst = append(dst, slots[i].rid.Load())
		}
	}
	return dst
}

// stamp is the sequence number of the key's shard. A lookup waits for an
// even one, so a stamp taken while a writer is at work (odd) never equals
// one taken after the lookup.
func (x *hashIndex) stamp(key []byte) uint64 {
	_, sh := x.hash(key)
	return sh.seq.Load()
}

func (x *hashIndex) lookup(key []byte, dst []uint64) []uint64 {
	h, sh := x.hash(key)
	n := len(dst)
	for spin := 0; ; spin++ {
		s1 := sh.seq.Load()
		if s1&1 != 0 {
			backoff(spin)
			continue
		}
		// candidates, with find inlined: most keys have no tree.
		dst = find(*sh.slots.Load(), h, dst[:n])
		if len(dst) > n && dst[n]&overMark != 0 {
			dst = sh.overflowed(h, dst, s1)
		}
		if sh.seq.Load() == s1 {
			for i, w := range dst[n:] {
				dst[n+i] = w & ridMask
				x.heap.prefetchAt(w&ridMask, hintOf(w))
			}
			return dst
		}
	}
}

// scanKey appends to dst the RIDs, at most n of them and the smallest
// first, of entries that may have the key and whose RIDs are from from
// up: a scan of a key with many rows takes them a batch at a time, so
// that its cost and the memory it takes follow the rows it delivers, not
// all the key's rows.
func (x *hashIndex) scanKey(key []byte, from uint64, n int, dst []uint64) []uint64 {
	h, sh := x.hash(key)
	base := len(dst)
	for spin := 0; ; spin++ {
		s1 := sh.seq.Load()
		if s1&1 != 0 {
			backoff(spin)
			continue
		}
		dst = sh.candidatesFrom(h, from, n, dst[:base])
		if sh.seq.Load() == s1 {
			return dst
		}
	}
}

// candidatesFrom is candidates for scanKey: it appends the RIDs of at
// most n entries with hash h from RID from up, the smallest first. The
// slot array holds at most overflowAt entries of h, and the overflow
// tree is in RID order within a hash, so it reads at most n+overflowAt.
func (sh *hashShard) candidatesFrom(h, from uint64, n int, dst []uint64) []uint64 {
	base := len(dst)
	dst = find(*sh.slots.Load(), h, dst)
	marked := len(dst) > base && dst[base]&overMark != 0
	k := base
	for _, w := range dst[base:] {
		if w&ridMask >= from {
			dst[k] = w & ridMask
			k++
		}
	}
	dst = dst[:k]
	if marked {
		o := sh.over.Load()
		o.mu.RLock()
		got := 0
		o.tree.Ascend(oentry{h: h, w: from}, func(e oentry) bool {
			if e.h != h || got == n {
				return false
			}
			dst = append(dst, e.w&ridMask)
			got++
			return true
		})
		o.mu.RUnlock()
	}
	slices.Sort(dst[base:])
	if len(dst)-base > n {
		dst = dst[:base+n]
	}
	return dst
}

// candidates appends to dst, which holds n words before, the rid words
// of the shard's entries with hash h: those in the slot array and, if
// they carry overMark, those in the overflow tree. s1 is the shard's seq
// when the caller began; a lock-free reader's result is good only while
// seq stays s1, so once it moves the tree's entries stop there (a
// writer has made it odd before it waits for the tree's lock, and it
// would wait, with every reader of the shard behind it, while this read
// them all). The shard's writer passes the odd seq it set.
func (sh *hashShard) candidates(h uint64, dst []uint64, n int, s1 uint64) []uint64 {
	dst = find(*sh.slots.Load(), h, dst)
	if len(dst) == n || dst[n]&overMark == 0 {
		return dst
	}
	return sh.overflowed(h, dst, s1)
}

// overflowed appends to dst the rid words of the overflow tree's entries
// with hash h, while the shard's seq stays s1 (candidates).
func (sh *hashShard) overflowed(h uint64, dst []uint64, s1 uint64) []uint64 {
	o := sh.over.Load()
	o.mu.RLock()
	o.each(h, func(e oentry) bool {
		dst = append(dst, e.w)
		return len(dst)&63 != 0 || sh.seq.Load() == s1
	})
	o.mu.RUnlock()
	return dst
}

// put adds an entry with hash h and rid word w: to the slot array, or,
// when the array holds overflowAt entries of h already, to the overflow
// tree, marking those entries. The caller holds mu and has made seq odd.
func (sh *hashShard) put(h, w uint64) {
	slots := *sh.slots.Load()
	mask := uint64(len(slots) - 1)
	var same [overflowAt]*hslot
	k, free := 0, -1 // free: the first slot on the probe an entry can take
	for i, n := (h>>8)&mask, 0; n < len(slots) && k < overflowAt; i, n = (i+1)&mask, n+1 {
		e := slots[i].h.Load()
		if free < 0 && (e == hEmpty || e == hTomb) {
			free = int(i)
		}
		if e == hEmpty {
			break
		}
		if e == h {
			same[k] = &slots[i]
			k++
		}
	}
	if k < overflowAt {
		if k > 0 {
			w |= same[0].rid.Load() & overMark
		}
		sh.insert(slots, free, h, w)
		return
	}
	o := sh.over.Load()
	if o == nil {
		o = &overflow{tree: btree.NewBTreeGOptions(oentryLess, btree.Options{NoLocks: true})}
		sh.over.Store(o)
	}
	o.mu.Lock()
	o.tree.Set(oentry{h, w &^ overMark})
	o.mu.Unlock()
	for _, s := range same {
		if s.rid.Load()&overMark == 0 {
			s.rid.Or(overMark) // not a load and a store: a rehint's swap in between would be lost
		}
	}
}

// remove drops the entry with hash h for the row at rid, and reports
// whether there was one. An entry that leaves the slot array while the
// overflow tree holds more of its hash is replaced by one from the tree,
// so that the array keeps overflowAt marked entries of the hash while
// the tree has any; word gives its rid word with a fresh hint (the tree's
// may be stale). The caller holds mu and has made seq odd.
func (sh *hashShard) remove(h, rid uint64, word func(rid uint64) uint64) bool {
	o := sh.over.Load()
	s := entry(*sh.slots.Load(), h, rid)
	if s == nil {
		if o == nil {
			return false
		}
		o.mu.Lock()
		_, ok := o.tree.Delete(oentry{h, rid})
		o.mu.Unlock()
		return ok
	}
	if s.rid.Load()&overMark != 0 {
		var next oentry
		o.mu.Lock()
		o.each(h, func(e oentry) bool {
			next = e
			return false
		})
		if next.h != 0 {
			o.tree.Delete(next)
		}
		o.mu.Unlock()
		if next.h != 0 {
			s.rid.Store(word(next.w&ridMask) | overMark)
			return true
		}
	}
	s.h.Store(hTomb)
	s.rid.Store(0)
	sh.used--
	sh.tombs++
	sh.shrink()
	return true
}

// shrink gives a shard that holds fewer than an eighth of its slots a
// smaller array, at most a quarter full, so that an index whose table
// shrank gives its memory back. The array grows again at three quarters
// full, so a resize either way follows a number of changes in proportion
// to its size. The caller holds mu and has made seq odd.
func (sh *hashShard) shrink() {
	slots := *sh.slots.Load()
	n, least := len(slots), max(8, sh.floor)
	if n <= least || sh.used*8 >= n {
		return
	}
	for n > least && (sh.used+1)*4 <= n/2 {
		n /= 2
	}
	sh.rehash(slots, n)
}

// insert adds an entry at slots[free], the first empty or tomb slot on
// its probe (put found it), unless the array must grow first: then on
// the new array's probe. The caller holds mu and has made seq odd.
func (sh *hashShard) insert(slots []hslot, free int, h, rid uint64) {
	if (sh.used+sh.tombs+1)*4 > len(slots)*3 {
		n := len(slots)
		if (sh.used+1)*2 > n {
			n *= 2
		}
		slots = sh.rehash(slots, n) // no tombs in it
		mask := uint64(n - 1)
		i := (h >> 8) & mask
		for slots[i].h.Load() != hEmpty {
			i = (i + 1) & mask
		}
		free = int(i)
	}
	s := &slots[free]
	if s.h.Load() == hTomb {
		sh.tombs--
	}
	s.rid.Store(rid)
	s.h.Store(h)
	sh.used++
}

// newSlots returns an array of n empty slots for a shard to fill at
// random, its pages already mapped in (prefault).
func newSlots(n int) []hslot {
	slots := make([]hslot, n)
	prefault(unsafe.Pointer(unsafe.SliceData(slots)), uintptr(n)*unsafe.Sizeof(hslot{}))
	return slots
}

// rehash moves the live entries into a new array of n slots and
// publishes it.
func (sh *hashShard) rehash(old []hslot, n int) []hslot {
	slots := newSlots(n)
	mask := uint64(n - 1)
	for i := range old {
		h := old[i].h.Load()
		if h&hUsed == 0 {
			continue
		}
		j := (h >> 8) & mask
		for slots[j].h.Load() != hEmpty {
			j = (j + 1) & mask
		}
		slots[j].h.Store(h)
		slots[j].rid.Store(old[i].rid.Load())
	}
	sh.tombs = 0
	sh.slots.Store(&slots)
	return slots
}

// fillSize is the length of a slot array that holds count entries at
// most half full.
func fillSize(count int) int {
	n := 8
	for n < 2*count {
		n *= 2
	}
	return n
}

// fill fills an empty shard, not yet shared, with entries (a hash and a
// RID in turn), in an array sized for them at most half full. dup, if
// set, is called for each pair of entries with equal hashes and may
// refuse them.
func (sh *hashShard) fill(entries []uint64, dup func(a, b uint64) error) error {
	count := len(entries) / 2
	n := fillSize(count)
	slots := newSlots(n)
	// No reader sees the array before slots.Store publishes it, so the
	// entries go in with plain stores, which the CPU overlaps; an atomic
	// store waits for its cache line, a miss each in an array larger
	// than the cache.
	plain := unsafe.Slice((*uint64)(unsafe.Pointer(unsafe.SliceData(slots))), 2*n)
	mask := uint64(n - 1)
	var o *overflow
	for e := 0; e < len(entries); e += 2 {
		h, rid := entries[e], entries[e+1]
		i, same := (h>>8)&mask, 0
		for ; plain[2*i] != hEmpty && same < overflowAt; i = (i + 1) & mask {
			if plain[2*i] == h {
				same++
				if dup != nil {
					if err := dup(plain[2*i+1]&ridMask, rid&ridMask); err != nil {
						return err
					}
				}
			}
		}
		if same < overflowAt {
			plain[2*i], plain[2*i+1] = h, rid
			continue
		}
		if o == nil {
			o = &overflow{tree: btree.NewBTreeGOptions(oentryLess, btree.Options{NoLocks: true})}
		}
		if dup != nil {
			var err error
			o.each(h, func(e oentry) bool {
				err = dup(e.w&ridMask, rid&ridMask)
				return err == nil
			})
			if err != nil {
				return err
			}
		}
		o.tree.Set(oentry{h, rid})
		count--
		for j := (h >> 8) & mask; plain[2*j] != hEmpty; j = (j + 1) & mask {
			if plain[2*j] == h {
				plain[2*j+1] |= overMark
			}
		}
	}
	sh.over.Store(o)
	if m := fillSize(count); m < n {
		// The array was sized for the entries that went to the overflow
		// tree too: a key with a million rows would keep two million
		// slots for its eight. Nobody reads the shard yet.
		slots = sh.rehash(slots, m)
	}
	sh.used, sh.tombs = count, 0
	sh.slots.Store(&slots)
	return nil
}

// write runs fn as a writer of the shard.
func (sh *hashShard) write(fn func() error) error {
	sh.mu.Lock()
	sh.seq.Add(1)
	err := fn()
	sh.seq.Add(1)
	sh.mu.Unlock()
	return err
}

func (x *hashIndex) claim(key []byte, rid uint64, check func(uint64) error) error {
	return x.place(key, rid, false, check)
}

func (x *hashIndex) ensure(key []byte, rid uint64, check func(uint64) error) error {
	return x.place(key, rid, true, check)
}

// place is claim, and with once ensure.
func (x *hashIndex) place(key []byte, rid uint64, once bool, check func(uint64) error) error {
	h, sh := x.hash(key)
	w := x.word(rid)
	return sh.write(func() error {
		held := once && sh.holds(h, rid)
		if check != nil {
			var buf [4]uint64
			for _, c := range sh.candidates(h, buf[:0], 0, sh.seq.Load()) {
				if err := check(c & ridMask); err != nil {
					return err
				}
			}
		}
		if !held {
			sh.put(h, w)
			x.count.Add(1)
		}
		return nil
	})
}

// holds reports whether the shard has the entry with hash h for the row
// at rid, in its slot array or its overflow tree. The caller holds mu.
func (sh *hashShard) holds(h, rid uint64) bool {
	if entry(*sh.slots.Load(), h, rid) != nil {
		return true
	}
	if o := sh.over.Load(); o != nil {
		_, ok := o.tree.Get(oentry{h, rid})
		return ok
	}
	return false
}

// reserve sizes every shard's slot array for rows entries spread over
// the shards, so that an index filled one entry at a time (backfill)
// does not grow its arrays again and again. The index is not shared yet.
func (x *hashIndex) reserve(rows int64) {
	per := perShard(rows)
	if per == 0 {
		return
	}
	n := fillSize(per)
	for i := range x.shards {
		slots := newSlots(n)
		x.shards[i].slots.Store(&slots)
		x.shards[i].floor = n // until fit: a shard still filling is not one that shrank
	}
}

// perShard returns how many of rows entries, spread over the shards by
// hash, a shard may get: the average plus five standard deviations, so
// that few shards get more; 0 for fewer rows than shards.
func perShard(rows int64) int {
	per := float64(rows) / hashShards
	if per < 1 {
		return 0
	}
	return int(per + 5*math.Sqrt(per) + 8)
}

// fit shrinks the shards left far emptier than reserve planned (their
// entries went to overflow trees, or the keys have few values).
func (x *hashIndex) fit() {
	for i := range x.shards {
		sh := &x.shards[i]
		_ = sh.write(func() error {
			sh.floor = 0
			if slots := *sh.slots.Load(); fillSize(sh.used) < len(slots) {
				sh.rehash(slots, fillSize(sh.used))
			}
			return nil
		})
	}
}

func (x *hashIndex) add(key []byte, rid uint64) {
	h, sh := x.hash(key)
	w := x.word(rid)
	_ = sh.write(func() error {
		sh.put(h, w)
		return nil
	})
	x.count.Add(1)
}

func (x *hashIndex) del(key []byte, rid uint64) {
	h, sh := x.hash(key)
	_ = sh.write(func() error {
		if sh.remove(h, rid, x.word) {
			x.count.Add(-1)
		}
		return nil
	})
}

// entry returns the slot of the entry with hash h for the row at rid, or
// nil if slots holds none (the shard's overflow tree may).
func entry(slots []hslot, h, rid uint64) *hslot {
	mask := uint64(len(slots) - 1)
	for i, n := (h>>8)&mask, 0; n < len(slots); i, n = (i+1)&mask, n+1 {
		s := &slots[i]
		e := s.h.Load()
		if e == hEmpty {
			return nil
		}
		if e == h && s.rid.Load()&ridMask == rid {
			return s
		}
	}
	return nil
}

// rehint stores the row's offset now in its entry under key. It takes no
// lock: it changes only the hint bits, with a compare-and-swap, so a
// reader sees the old hint or the new one, and an entry moved or removed
// meanwhile (rehash, del) is left alone. A rehash that copied the entry
// before the swap keeps the old hint: a wasted prefetch, no more. An
// entry in the overflow tree keeps its hint too.
func (x *hashIndex) rehint(key []byte, rid uint64) {
	h, sh := x.hash(key)
	w := x.word(rid)
	if s := entry(*sh.slots.Load(), h, rid); s != nil {
		if old := s.rid.Load(); old&^overMark != w && old&ridMask == rid {
			s.rid.CompareAndSwap(old, w|old&overMark)
		}
	}
}

func (x *hashIndex) prefetch(key []byte) {
	h, sh := x.hash(key)
	slots := *sh.slots.Load()
	prefetch(unsafe.Pointer(&slots[(h>>8)&uint64(len(slots)-1)]))
}

func (x *hashIndex) memBytes() int64 {
	var n int64
	for i := range x.shards {
		sh := &x.shards[i]
		n += int64(len(*sh.slots.Load())) * int64(unsafe.Sizeof(hslot{}))
		if o := sh.over.Load(); o != nil {
			o.mu.RLock()
			n += int64(o.tree.Len()) * int64(unsafe.Sizeof(oentry{}))
			o.mu.RUnlock()
		}
	}
	return n + int64(unsafe.Sizeof(*x))
}

func (x *hashIndex) entries() int64 { return x.count.Load() }

// oitem is an ordered index entry. Entries with equal keys (non-unique
// indexes) are ordered by RID. pfx holds the key's first 8 bytes,
// big-endian and zero-padded, so that most comparisons in a B-tree descent
// decide without touching the key's bytes in their slab (a cache miss
// each).
type oitem struct {
	pfx uint64
	key string
	rid uint64
}

func mkItem(key string, rid uint64) oitem {
	var b [8]byte
	copy(b[:], key)
	return oitem{pfx: binary.BigEndian.Uint64(b[:]), key: key, rid: rid}
}

func oless(a, b oitem) bool {
	if a.pfx != b.pfx {
		return a.pfx < b.pfx
	}
	if c := strings.Compare(a.key, b.key); c != 0 {
		return c < 0
	}
	return a.rid < b.rid
}

const slabSize = 64 << 10

type orderedIndex struct {
	mu        sync.RWMutex
	tree      *btree.BTreeG[oitem]
	slab      []byte        // current key slab; keys are carved from its tail
	keyBytes  int64         // bytes of live keys
	slabBytes int64         // bytes of slabs handed out
	bigBytes  int64         // bytes of live keys too large for a slab (bigKey)
	changes   atomic.Uint64 // entries added and removed, raised under mu

	// While moving, keys are being re-interned into fresh slabs, a few
	// with each change of the index (see del): those of the entries below
	// next have moved. oldBytes is the bytes of the slabs they leave.
	moving   bool
	next     oitem
	oldBytes int64
}

// reinternStep is how many keys a change of an index moves to fresh
// slabs while it re-interns: the extra cost of a change is bounded, and
// a re-interning ends after an eighth as many changes as the index has
// entries, long before the holes it frees could dominate again.
const reinternStep = 8

func newOrderedIndex() *orderedIndex {
	return &orderedIndex{tree: btree.NewBTreeGOptions(oless, btree.Options{NoLocks: true, Degree: 64})}
}

// intern copies key into the slab. The caller holds mu. Deleted keys leave
// holes that are reclaimed when every key of their slab is gone; when holes
// dominate, the index is re-interned into fresh slabs, a few keys at a
// time (reinternSome).
func (x *orderedIndex) intern(key []byte) string {
	if bigKey(key) {
		return string(key)
	}
	if len(x.slab)+len(key) > cap(x.slab) {
		x.slab = make([]byte, 0, slabSize)
		x.slabBytes += slabSize
	}
	start := len(x.slab)
	x.slab = append(x.slab, key...)
	b := x.slab[start:len(x.slab):len(x.slab)]
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// bigKey says whether a key is too large to share a slab: it gets an
// allocation of its own.
func bigKey(key []byte) bool { return len(key) > slabSize/8 }

// unsafeString views b as a string without copying, for pivots and
// comparisons that do not outlive b.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// unsafeBytes views s as bytes without copying; they must not be written.
func unsafeBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func (x *orderedIndex) lookup(key []byte, dst []uint64) []uint64 {
	x.mu.RLock()
	x.tree.Ascend(mkItem(unsafeString(key), 0), func(it oitem) bool {
		if it.key != string(key) {
			return false
		}
		dst = append(dst, it.rid)
		return true
	})
	x.mu.RUnlock()
	return dst
}

// stamp counts the index's changes: any key's, which is simpler than
// per-key counts and costs only a lookup more now and then.
func (x *orderedIndex) stamp([]byte) uint64 { return x.changes.Load() }

func (x *orderedIndex) claim(key []byte, rid uint64, check func(uint64) error) error {
	return x.place(key, rid, false, check)
}

func (x *orderedIndex) ensure(key []byte, rid uint64, check func(uint64) error) error {
	return x.place(key, rid, true, check)
}

// place is claim, and with once ensure.
func (x *orderedIndex) place(key []byte, rid uint64, once bool, check func(uint64) error) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var held bool
	if once {
		_, held = x.tree.Get(mkItem(unsafeString(key), rid))
	}
	if check != nil {
		var err error
		x.tree.Ascend(mkItem(unsafeString(key), 0), func(it oitem) bool {
			if it.key != string(key) {
				return false
			}
			err = check(it.rid)
			return err == nil
		})
		if err != nil {
			return err
		}
	}
	if !held {
		x.addLocked(key, rid)
	}
	return nil
}

func (x *orderedIndex) add(key []byte, rid uint64) {
	x.mu.Lock()
	x.addLocked(key, rid)
	x.mu.Unlock()
}

func (x *orderedIndex) addLocked(key []byte, rid uint64) {
	x.tree.Set(mkItem(x.intern(key), rid))
	x.keyBytes += int64(len(key))
	if bigKey(key) {
		x.bigBytes += int64(len(key))
	}
	x.changes.Add(1)
	x.reinternSome()
}

func (x *orderedIndex) del(key []byte, rid uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.tree.Delete(mkItem(unsafeString(key), rid)); !ok {
		return
	}
	x.keyBytes -= int64(len(key))
	if bigKey(key) {
		x.bigBytes -= int64(len(key))
	}
	x.changes.Add(1)
	// Holes dominate: re-intern every key into fresh slabs so that the old
	// ones can be collected. Not all at once, which would hold every
	// reader and writer of the index for a time in proportion to its
	// size: each change from now on moves a few keys, in key order.
	if !x.moving && x.slabBytes > 4*slabSize && x.slabBytes > 3*(x.keyBytes-x.bigBytes) {
		x.moving, x.next, x.oldBytes = true, oitem{}, x.slabBytes
		x.slab, x.slabBytes = nil, 0
	}
	x.reinternSome()
}

// reinternSome moves the keys of the next reinternStep entries to fresh
// slabs, and ends the re-interning once it has passed the last entry.
// Keys added meanwhile go to fresh slabs already; those above next are
// copied once more, which costs a little room and nothing else. The
// caller holds mu.
func (x *orderedIndex) reinternSome() {
	if !x.moving {
		return
	}
	var buf [reinternStep]oitem
	items := buf[:0]
	x.tree.Ascend(x.next, func(it oitem) bool {
		items = append(items, it)
		return len(items) < reinternStep
	})
	for i, it := range items {
		if !bigKey(unsafeBytes(it.key)) { // a big key has an allocation of its own
			items[i] = mkItem(x.intern(unsafeBytes(it.key)), it.rid)
			x.tree.Set(items[i]) // the same key and RID: it replaces it
		}
	}
	if len(items) < reinternStep {
		x.moving, x.next, x.oldBytes = false, oitem{}, 0
		return
	}
	last := items[len(items)-1]
	x.next = oitem{pfx: last.pfx, key: last.key, rid: last.rid + 1} // just above last
}

// scan calls fn for entries with lo <= key < hi (hi nil: no upper bound),
// ascending or descending, in batches so that the lock is not held while
// fn runs. fn returns false to stop. want, if not zero, is how many
// entries the caller expects to need: the first batch is no larger. buf is
// reused for the batches and returned for the next scan.
func (x *orderedIndex) scan(lo, hi []byte, reverse bool, want int, buf []oitem, fn func(key string, rid uint64) bool) []oitem {
	const maxBatch = 64
	batch := maxBatch
	if want > 0 && want < maxBatch {
		batch = want
	}
	items := buf[:0]
	var resume *oitem
	for {
		items = items[:0]
		// collect reports whether to go on; it stops at the far bound.
		collect := func(it oitem) bool {
			if resume != nil && it == *resume {
				return true
			}
			if reverse {
				if hi != nil && it.key >= string(hi) {
					return true // Descend starts at or just above hi
				}
				if it.key < string(lo) {
					return false
				}
			} else if hi != nil && it.key >= string(hi) {
				return false
			}
			items = append(items, it)
			return len(items) < batch
		}
		x.mu.RLock()
		switch {
		case resume != nil && reverse:
			x.tree.Descend(*resume, collect)
		case resume != nil:
			x.tree.Ascend(*resume, collect)
		case reverse && hi != nil:
			x.tree.Descend(mkItem(unsafeString(hi), 0), collect)
		case reverse:
			x.tree.Reverse(collect)
		default:
			x.tree.Ascend(mkItem(unsafeString(lo), 0), collect)
		}
		x.mu.RUnlock()
		for _, it := range items {
			if !fn(it.key, it.rid) {
				return items
			}
		}
		if len(items) < batch {
			return items
		}
		last := items[len(items)-1]
		resume = &last
		batch = maxBatch
	}
}

// prefetch does nothing: a B-tree descent is a chain of dependent loads.
func (x *orderedIndex) prefetch([]byte) {}

func (x *orderedIndex) rehint([]byte, uint64) {} // an entry holds no offset

func (x *orderedIndex) memBytes() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return int64(x.tree.Len())*int64(unsafe.Sizeof(oitem{})) + x.slabBytes + x.oldBytes + x.bigBytes
}

func (x *orderedIndex) entries() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return int64(x.tree.Len())
}
