package mem

import (
	"hash/maphash"
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
//     scans it.
//   - orderedIndex is a B-tree (tidwall/btree) of {key, RID} whose keys are
//     carved out of large shared byte slabs, so the collector sees one
//     string header per entry in a node's item array but only a few slab
//     objects.

type index interface {
	// lookup appends to dst the RIDs of entries that may have the key.
	lookup(key []byte, dst []uint64) []uint64
	// claim adds key->rid after check approves every existing candidate,
	// atomically with respect to other claims of the key.
	claim(key []byte, rid uint64, check func(rid uint64) error) error
	add(key []byte, rid uint64)
	del(key []byte, rid uint64)
	// memBytes estimates the memory the index uses.
	memBytes() int64
	entries() int64
}

const hashShards = 256

type hslot struct{ h, rid uint64 }

const (
	hEmpty = 0
	hTomb  = 1
	hUsed  = uint64(1) << 63
)

type hashShard struct {
	mu    sync.RWMutex
	slots []hslot // power-of-two length
	used  int
	tombs int
	_     [16]byte // keep neighbouring shards' locks off one cache line
}

type hashIndex struct {
	seed   maphash.Seed
	shards [hashShards]hashShard
	count  atomic.Int64
}

func newHashIndex() *hashIndex {
	x := &hashIndex{seed: maphash.MakeSeed()}
	for i := range x.shards {
		x.shards[i].slots = make([]hslot, 8)
	}
	return x
}

func (x *hashIndex) hash(key []byte) (uint64, *hashShard) {
	h := maphash.Bytes(x.seed, key) | hUsed
	return h, &x.shards[h&(hashShards-1)]
}

func (sh *hashShard) find(h uint64, dst []uint64) []uint64 {
	mask := uint64(len(sh.slots) - 1)
	for i := (h >> 8) & mask; ; i = (i + 1) & mask {
		s := &sh.slots[i]
		if s.h == hEmpty {
			return dst
		}
		if s.h == h {
			dst = append(dst, s.rid)
		}
	}
}

func (x *hashIndex) lookup(key []byte, dst []uint64) []uint64 {
	h, sh := x.hash(key)
	sh.mu.RLock()
	dst = sh.find(h, dst)
	sh.mu.RUnlock()
	return dst
}

func (sh *hashShard) insert(h, rid uint64) {
	if (sh.used+sh.tombs+1)*4 > len(sh.slots)*3 {
		n := len(sh.slots)
		if (sh.used+1)*2 > n {
			n *= 2
		}
		sh.rehash(n)
	}
	mask := uint64(len(sh.slots) - 1)
	for i := (h >> 8) & mask; ; i = (i + 1) & mask {
		s := &sh.slots[i]
		if s.h == hEmpty || s.h == hTomb {
			if s.h == hTomb {
				sh.tombs--
			}
			*s = hslot{h, rid}
			sh.used++
			return
		}
	}
}

func (sh *hashShard) rehash(n int) {
	old := sh.slots
	sh.slots = make([]hslot, n)
	sh.used, sh.tombs = 0, 0
	for _, s := range old {
		if s.h&hUsed != 0 {
			sh.insert(s.h, s.rid)
		}
	}
}

func (x *hashIndex) claim(key []byte, rid uint64, check func(uint64) error) error {
	h, sh := x.hash(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	var buf [4]uint64
	for _, c := range sh.find(h, buf[:0]) {
		if err := check(c); err != nil {
			return err
		}
	}
	sh.insert(h, rid)
	x.count.Add(1)
	return nil
}

func (x *hashIndex) add(key []byte, rid uint64) {
	h, sh := x.hash(key)
	sh.mu.Lock()
	sh.insert(h, rid)
	sh.mu.Unlock()
	x.count.Add(1)
}

func (x *hashIndex) del(key []byte, rid uint64) {
	h, sh := x.hash(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	mask := uint64(len(sh.slots) - 1)
	for i := (h >> 8) & mask; ; i = (i + 1) & mask {
		s := &sh.slots[i]
		if s.h == hEmpty {
			return
		}
		if s.h == h && s.rid == rid {
			s.h, s.rid = hTomb, 0
			sh.used--
			sh.tombs++
			x.count.Add(-1)
			return
		}
	}
}

func (x *hashIndex) memBytes() int64 {
	var n int64
	for i := range x.shards {
		sh := &x.shards[i]
		sh.mu.RLock()
		n += int64(len(sh.slots)) * int64(unsafe.Sizeof(hslot{}))
		sh.mu.RUnlock()
	}
	return n + int64(unsafe.Sizeof(*x))
}

func (x *hashIndex) entries() int64 { return x.count.Load() }

// oitem is an ordered index entry. Entries with equal keys (non-unique
// indexes) are ordered by RID.
type oitem struct {
	key string
	rid uint64
}

func oless(a, b oitem) bool {
	if a.key != b.key {
		return a.key < b.key
	}
	return a.rid < b.rid
}

const slabSize = 64 << 10

type orderedIndex struct {
	mu        sync.RWMutex
	tree      *btree.BTreeG[oitem]
	slab      []byte // current key slab; keys are carved from its tail
	keyBytes  int64  // bytes of live keys
	slabBytes int64  // bytes of slabs handed out
}

func newOrderedIndex() *orderedIndex {
	return &orderedIndex{tree: btree.NewBTreeGOptions(oless, btree.Options{NoLocks: true, Degree: 64})}
}

// intern copies key into the slab. The caller holds mu. Deleted keys leave
// holes that are reclaimed when every key of their slab is gone; when holes
// dominate, the index is re-interned into fresh slabs.
func (x *orderedIndex) intern(key []byte) string {
	if len(key) > slabSize/8 {
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

// unsafeString views b as a string without copying, for pivots and
// comparisons that do not outlive b.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func (x *orderedIndex) lookup(key []byte, dst []uint64) []uint64 {
	x.mu.RLock()
	x.tree.Ascend(oitem{key: unsafeString(key)}, func(it oitem) bool {
		if it.key != string(key) {
			return false
		}
		dst = append(dst, it.rid)
		return true
	})
	x.mu.RUnlock()
	return dst
}

func (x *orderedIndex) claim(key []byte, rid uint64, check func(uint64) error) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	var err error
	x.tree.Ascend(oitem{key: unsafeString(key)}, func(it oitem) bool {
		if it.key != string(key) {
			return false
		}
		err = check(it.rid)
		return err == nil
	})
	if err != nil {
		return err
	}
	x.addLocked(key, rid)
	return nil
}

func (x *orderedIndex) add(key []byte, rid uint64) {
	x.mu.Lock()
	x.addLocked(key, rid)
	x.mu.Unlock()
}

func (x *orderedIndex) addLocked(key []byte, rid uint64) {
	x.tree.Set(oitem{key: x.intern(key), rid: rid})
	x.keyBytes += int64(len(key))
}

func (x *orderedIndex) del(key []byte, rid uint64) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if _, ok := x.tree.Delete(oitem{key: unsafeString(key), rid: rid}); !ok {
		return
	}
	x.keyBytes -= int64(len(key))
	// Holes dominate: re-intern every key into fresh slabs so that the old
	// ones can be collected.
	if x.slabBytes > 4*slabSize && x.slabBytes > 3*x.keyBytes {
		x.reintern()
	}
}

func (x *orderedIndex) reintern() {
	items := make([]oitem, 0, x.tree.Len())
	x.tree.Scan(func(it oitem) bool {
		items = append(items, it)
		return true
	})
	x.slab, x.slabBytes = nil, 0
	fresh := btree.NewBTreeGOptions(oless, btree.Options{NoLocks: true, Degree: 64})
	for _, it := range items {
		it.key = x.intern(unsafeBytes(it.key))
		fresh.Load(it)
	}
	x.tree = fresh
}

// scan calls fn for entries with lo <= key < hi (hi nil: no upper bound),
// ascending or descending, in batches so that the lock is not held while
// fn runs. fn returns false to stop.
func (x *orderedIndex) scan(lo, hi []byte, reverse bool, fn func(key string, rid uint64) bool) {
	const batch = 64
	items := make([]oitem, 0, batch)
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
			x.tree.Descend(oitem{key: unsafeString(hi)}, collect)
		case reverse:
			x.tree.Reverse(collect)
		default:
			x.tree.Ascend(oitem{key: unsafeString(lo)}, collect)
		}
		x.mu.RUnlock()
		for _, it := range items {
			if !fn(it.key, it.rid) {
				return
			}
		}
		if len(items) < batch {
			return
		}
		last := items[len(items)-1]
		resume = &last
	}
}

func (x *orderedIndex) memBytes() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return int64(x.tree.Len())*int64(unsafe.Sizeof(oitem{})) + x.slabBytes
}

func (x *orderedIndex) entries() int64 {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return int64(x.tree.Len())
}
