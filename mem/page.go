package mem

import (
	"bytes"
	"encoding/binary"
	"math/bits"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Heap pages. Rows live in slotted pages in the CUBRID style: records grow
// up from the start of the page and the slot directory grows down from the
// end. A row is addressed by its RID = page<<16 | slot, stable for the
// row's life unless an update no longer fits its page (then the row moves
// and every index entry is rewritten while the row is locked).
//
//	0                                                      PageSize
//	+--------+--------+----- free -----+--------+--------+--------+
//	| rec 0  | rec 2  |  ...           | slot 2 | slot 1 | slot 0 |
//	+--------+--------+----------------+--------+--------+--------+
//	                                     8 B each: offset<<32 | length
//
// A slot word of zero is an empty slot. Published record bytes are never
// overwritten: an update writes the new version into free space and then
// switches the slot word; when the page runs out of room it is compacted
// into a fresh array that replaces the old one. A reader that still holds
// the old array keeps reading valid bytes and the Go collector frees it
// once nobody does, so readers need no latch and no epoch scheme.
//
// Compaction keeps every live record where it was, so that the offsets
// hash indexes hold as hints (index.go) stay right: the free runs between
// the records of the old array become holes in the fresh one, which new
// versions fill (first fit) before the page must compact again. A hole
// is listed in the array itself: its first 4 bytes hold the next hole's
// offset and its own length, so that a write finds one without touching
// more memory than the bytes it writes. Only when no hole fits a record
// does the page pack its records to its start, moving them.
//
// Each slot also has a TID word, kept beside the page (in tids) rather than
// in it so that compaction never moves it:
//
//	bit 63  locked   a committing transaction (or the applier) owns the row
//	bit 62  absent   no row: deleted, or an insert not yet committed
//	0..61   LSN of the commit that wrote the current version
//
// A reader loads the TID, then the slot word and bytes, then the TID again;
// if it changed or was locked it retries. Page arrays hold no pointers, so
// the collector never scans row data: its work grows with pages, not rows.

// PageSize is the size of a heap page.
const PageSize = 32 << 10

const (
	// fillLimit is how full an insert may leave a page: the rest is kept
	// for new versions of its rows, so that updates do not have to compact
	// the page each time (CUBRID's unfill factor).
	fillLimit = PageSize * 8 / 10

	slotSize  = 8
	tidLocked = uint64(1) << 63
	tidAbsent = uint64(1) << 62
	tidLSN    = tidAbsent - 1
	chunkBits = 10 // pages per directory chunk: 1024
)

type pageArray = [PageSize]byte

// pageRef is what a reader needs of a page: its array and TID words. The
// heap's directory holds these inline, so that a read goes from a RID
// straight to the TID word and, in parallel, the slot word, without first
// loading the page's header: one dependent cache miss fewer per read.
type pageRef struct {
	data atomic.Pointer[pageArray]
	tids []atomic.Uint64 // set before any RID of the page reaches an index: readers get it through that
}

type page struct {
	*pageRef
	mu sync.Mutex // latch for writers: allocation, installs, compaction, snapshot visits

	// Guarded by mu.
	nslots int      // length of the slot directory
	end    int      // end of record bytes
	dead   int      // bytes below end in no record and no listed hole: free after the next compaction
	holes  int      // 1 + the offset of the first hole listed in the current array; 0: none
	hole   int      // bytes in the holes listed
	live   int      // slots in use
	free   []uint16 // empty slots below nslots
	listed bool     // on the heap's list of pages with room
}

// holeMin is the smallest hole listed: its header is 4 bytes, the next
// hole's 1 + offset and its own length. Smaller free runs count as dead.
const holeMin = 4

func readHole(d *pageArray, off int) (next, n int) {
	return int(binary.LittleEndian.Uint16(d[off:])), int(binary.LittleEndian.Uint16(d[off+2:]))
}

func writeHole(d *pageArray, off, next, n int) {
	binary.LittleEndian.PutUint16(d[off:], uint16(next))
	binary.LittleEndian.PutUint16(d[off+2:], uint16(n))
}

func slotWord(d *pageArray, slot int) *uint64 {
	return (*uint64)(unsafe.Pointer(&d[PageSize-slotSize*(slot+1)]))
}

func loadLoc(d *pageArray, slot int) (off, n int) {
	w := atomic.LoadUint64(slotWord(d, slot))
	return int(w >> 32), int(uint32(w))
}

// room returns the bytes available for one more record, counting the
// bytes a compaction would reclaim: holes and dead versions.
func (p *page) room(newSlot bool) int {
	dir := p.nslots
	if newSlot {
		dir++
	}
	return PageSize - slotSize*dir - p.end + p.hole + p.dead
}

// compact copies the live records into a fresh array, packed at its
// start, and publishes it: every record may move. Slot skip is about to
// be written and counts as empty: when it is a new slot, its word in the
// old array may still lie under record bytes.
func (p *page) compact(skip int) {
	old := p.data.Load()
	fresh := new(pageArray)
	end := 0
	for s := 0; s < p.nslots; s++ {
		if s == skip {
			continue
		}
		off, n := loadLoc(old, s)
		if n == 0 {
			continue
		}
		copy(fresh[end:], old[off:off+n])
		*slotWord(fresh, s) = uint64(end)<<32 | uint64(n)
		end += n
	}
	p.end, p.dead, p.hole, p.holes = end, 0, 0, 0
	p.data.Store(fresh)
}

// reclaim lists as holes, in a fresh copy of the current array where
// every record stays at its offset, the free runs between the records
// (the versions that died, and runs too small to list before), if that
// leaves room for n bytes in one piece; else it changes nothing and
// returns false. A run that ends where the records end goes back to the
// space above them. Slot skip is about to be written: its word is not
// read.
func (p *page) reclaim(n, skip int) bool {
	old := p.data.Load()
	var used [PageSize / 64]uint64 // a bit per byte of the page in a record
	for s := 0; s < p.nslots; s++ {
		if s == skip {
			continue
		}
		if off, sz := loadLoc(old, s); sz > 0 {
			setBits(used[:], off, off+sz)
		}
	}
	end, fits := p.end, false
	for lo, hi := runs(used[:], 0, p.end); lo < p.end; lo, hi = runs(used[:], hi, p.end) {
		if hi == p.end {
			end = lo // the last run goes back above the records
			break
		}
		fits = fits || hi-lo >= n
	}
	if !fits && PageSize-slotSize*p.nslots-end < n {
		return false
	}
	// A clone, not new(pageArray) and a copy: the runtime does not zero
	// memory that an append is about to overwrite.
	fresh := (*pageArray)(bytes.Clone(old[:]))
	p.holes, p.hole, p.dead = 0, 0, 0
	last := -1 // the offset of the last hole listed
	for lo, hi := runs(used[:], 0, end); lo < end; lo, hi = runs(used[:], hi, end) {
		if hi-lo < holeMin {
			p.dead += hi - lo
			continue
		}
		writeHole(fresh, lo, 0, hi-lo)
		if last < 0 {
			p.holes = lo + 1
		} else {
			binary.LittleEndian.PutUint16(fresh[last:], uint16(lo+1))
		}
		last = lo
		p.hole += hi - lo
	}
	p.end = end
	p.data.Store(fresh)
	return true
}

// setBits sets bits lo to hi-1 of b.
func setBits(b []uint64, lo, hi int) {
	for lo < hi {
		w, i := lo/64, lo%64
		k := min(64-i, hi-lo)
		b[w] |= (^uint64(0) >> (64 - k)) << i
		lo += k
	}
}

// runs returns the first run of clear bits of b at or after at and
// before end, as [lo, hi); lo is end if there is none.
func runs(b []uint64, at, end int) (lo, hi int) {
	lo = scan(b, at, end, false)
	return lo, scan(b, lo, end, true)
}

// scan returns the first bit at or after at, and before end, that is set
// (or clear, if set is false); end if there is none.
func scan(b []uint64, at, end int, set bool) int {
	for at < end {
		w := b[at/64]
		if !set {
			w = ^w
		}
		w >>= at % 64
		if w != 0 {
			return min(at+bits.TrailingZeros64(w), end)
		}
		at += 64 - at%64
	}
	return end
}

// place finds n bytes in the current array: above the records, below the
// slot directory, or else the first hole listed that fits. ok is false
// when neither has room. What is left of a hole stays listed, or counts
// as dead when it is too small to list.
func (p *page) place(n int) (off int, ok bool) {
	if PageSize-slotSize*p.nslots-p.end >= n {
		off = p.end
		p.end += n
		return off, true
	}
	d := p.data.Load()
	prev := -1 // the hole that links to the one looked at
	for at := p.holes; at != 0; {
		off = at - 1
		next, size := readHole(d, off)
		if size < n {
			prev, at = off, next
			continue
		}
		link := next
		if rest := size - n; rest >= holeMin {
			writeHole(d, off+n, next, rest)
			link = off + n + 1
			p.hole += rest
		} else {
			p.dead += rest
		}
		p.hole -= size
		if prev < 0 {
			p.holes = link
		} else {
			binary.LittleEndian.PutUint16(d[prev:], uint16(link))
		}
		return off, true
	}
	return 0, false
}

// put writes rec into free space (compacting if needed) and points slot
// at it. The caller holds p.mu and has checked that it fits (room).
func (p *page) put(slot int, rec []byte) {
	var off int
	ok := p.end <= PageSize-slotSize*p.nslots // a new slot's word lies above the records
	if ok {
		off, ok = p.place(len(rec))
	}
	if !ok && p.dead > 0 && p.end <= PageSize-slotSize*p.nslots && p.reclaim(len(rec), slot) {
		off, ok = p.place(len(rec))
	}
	if !ok {
		p.compact(slot)
		if off, ok = p.place(len(rec)); !ok {
			panic("mem: a record the page had room for does not fit it packed")
		}
	}
	d := p.data.Load()
	copy(d[off:], rec)
	atomic.StoreUint64(slotWord(d, slot), uint64(off)<<32|uint64(len(rec)))
}

// clear empties a slot; its bytes become dead.
func (p *page) clear(slot int) {
	d := p.data.Load()
	_, n := loadLoc(d, slot)
	atomic.StoreUint64(slotWord(d, slot), 0)
	p.dead += n
	p.live--
	p.free = append(p.free, uint16(slot))
}

// pageChunk is a block of the heap's page directory.
type pageChunk struct {
	refs  [1 << chunkBits]pageRef
	pages [1 << chunkBits]atomic.Pointer[page]
}

// heap is a table's set of pages.
type heap struct {
	maxSlots int
	chunks   atomic.Pointer[[]*pageChunk]
	npages   atomic.Int64

	allocMu sync.Mutex // guards cur, roomy and adding pages; taken before any page latch
	cur     int        // page that takes inserts, -1 before the first
	roomy   []int      // pages that regained room through deletes

	// inserting is cur, for remove to read without allocMu: the page
	// that takes inserts keeps its array when it empties, so that a row
	// inserted and deleted again and again does not allocate one each
	// time. A stale value costs only that.
	inserting atomic.Int64
	released  atomic.Int64 // pages whose array was given back (emptyPage)
}

// emptyPage is the array of every page whose rows are all gone: the last
// delete gives the page's own array back to the collector (a table that
// shrinks gives its memory back), and the next insert into the page
// gives it a new one. Nothing writes it. A reader holding a stale RID
// finds the slot absent, or reads a zero slot word here and then finds
// the TID changed, as with any array replaced under it.
var emptyPage pageArray

func newHeap(minRow int) *heap {
	n := PageSize / (minRow + slotSize)
	if n > 1<<16 {
		n = 1 << 16
	}
	h := &heap{maxSlots: n, cur: -1}
	h.inserting.Store(-1)
	h.chunks.Store(&[]*pageChunk{})
	return h
}

func (h *heap) page(i int) *page {
	return (*h.chunks.Load())[i>>chunkBits].pages[i&(1<<chunkBits-1)].Load()
}

// ref returns the reader's part of page i.
func (h *heap) ref(i int) *pageRef {
	return &(*h.chunks.Load())[i>>chunkBits].refs[i&(1<<chunkBits-1)]
}

func ridOf(pg, slot int) uint64      { return uint64(pg)<<16 | uint64(slot) }
func splitRID(rid uint64) (int, int) { return int(rid >> 16), int(rid & 0xFFFF) }

// addPage appends an empty page. The caller holds allocMu.
func (h *heap) addPage() int {
	i := int(h.npages.Load())
	if i == 1<<(ridBits-16)-1 {
		panic("mem: a table's heap reached 2^32 pages (128 TiB)")
	}
	chunks := *h.chunks.Load()
	if i>>chunkBits == len(chunks) {
		grown := append(append([]*pageChunk(nil), chunks...), new(pageChunk))
		h.chunks.Store(&grown)
		chunks = grown
	}
	c := chunks[i>>chunkBits]
	r := &c.refs[i&(1<<chunkBits-1)]
	r.tids = make([]atomic.Uint64, h.maxSlots)
	for i := range r.tids {
		r.tids[i].Store(tidAbsent) // a slot never used holds no row
	}
	r.data.Store(new(pageArray))
	p := &page{pageRef: r}
	c.pages[i&(1<<chunkBits-1)].Store(p)
	h.npages.Store(int64(i + 1))
	return i
}

// tryInsert places rec in page pg if it fits below the fill limit (or the
// page is empty), returning the slot.
func (h *heap) tryInsert(pg int, rec []byte, tid uint64) (int, bool) {
	p := h.page(pg)
	p.mu.Lock()
	defer p.mu.Unlock()
	reuse := len(p.free) > 0
	if !reuse && p.nslots >= h.maxSlots {
		return 0, false
	}
	if p.live > 0 && PageSize-p.room(!reuse)+len(rec) > fillLimit {
		return 0, false
	}
	if p.room(!reuse) < len(rec) {
		return 0, false
	}
	if p.data.Load() == &emptyPage {
		p.data.Store(new(pageArray))
		h.released.Add(-1)
	}
	var slot int
	if reuse {
		slot = int(p.free[len(p.free)-1])
		p.free = p.free[:len(p.free)-1]
	} else {
		slot = p.nslots
		p.nslots++
	}
	p.put(slot, rec)
	p.tids[slot].Store(tid) // after the bytes: a reader holding a stale RID sees absent until now
	p.live++
	return slot, true
}

// insert stores rec in a new slot whose TID word is tid and returns its
// RID. Pages that regained room are filled before new pages are added.
func (h *heap) insert(rec []byte, tid uint64) uint64 {
	h.allocMu.Lock()
	defer h.allocMu.Unlock()
	if h.cur >= 0 {
		if slot, ok := h.tryInsert(h.cur, rec, tid); ok {
			return ridOf(h.cur, slot)
		}
	}
	for len(h.roomy) > 0 {
		pg := h.roomy[len(h.roomy)-1]
		h.roomy = h.roomy[:len(h.roomy)-1]
		p := h.page(pg)
		p.mu.Lock()
		p.listed = false
		p.mu.Unlock()
		if slot, ok := h.tryInsert(pg, rec, tid); ok {
			h.cur = pg
			h.inserting.Store(int64(pg))
			return ridOf(pg, slot)
		}
	}
	h.cur = h.addPage()
	h.inserting.Store(int64(h.cur))
	slot, ok := h.tryInsert(h.cur, rec, tid)
	if !ok {
		panic("mem: a row larger than an empty page passed validation")
	}
	return ridOf(h.cur, slot)
}

// read returns the committed version of a row: its TID word and bytes, or
// a TID with tidAbsent set and nil bytes. It waits while the row is locked.
func (h *heap) read(rid uint64) (uint64, []byte) {
	pg, slot := splitRID(rid)
	p := h.ref(pg)
	w := &p.tids[slot]
	for spin := 0; ; spin++ {
		t1 := w.Load()
		if t1&tidLocked != 0 {
			backoff(spin)
			continue
		}
		if t1&tidAbsent != 0 {
			return t1, nil
		}
		d := p.data.Load()
		off, n := loadLoc(d, slot)
		b := d[off : off+n : off+n]
		if w.Load() == t1 {
			return t1, b
		}
	}
}

// prefetchSlot asks for a row's TID word, slot word and page latch to be
// brought into cache, and prefetchRow for the start of its bytes (which the slot
// word locates), without waiting.
func (h *heap) prefetchSlot(rid uint64) {
	pg, slot := splitRID(rid)
	prefetch(unsafe.Pointer(h.page(pg))) // its latch
	p := h.ref(pg)
	prefetch(unsafe.Pointer(&p.tids[slot]))
	prefetch(unsafe.Pointer(slotWord(p.data.Load(), slot)))
}

// prefetchAt asks for the bytes at offset off of a row's page to be
// brought into cache: where an index's hint says the row's bytes are.
func (h *heap) prefetchAt(rid uint64, off int) {
	pg, _ := splitRID(rid)
	prefetch(unsafe.Pointer(&h.ref(pg).data.Load()[off&(PageSize-1)]))
}

// offset returns where a row's current bytes start in its page. The
// caller owns the row, or nothing else writes the table yet.
func (h *heap) offset(rid uint64) int {
	pg, slot := splitRID(rid)
	off, _ := loadLoc(h.ref(pg).data.Load(), slot)
	return off
}

func (h *heap) prefetchRow(rid uint64) {
	pg, slot := splitRID(rid)
	d := h.ref(pg).data.Load()
	off, _ := loadLoc(d, slot)
	prefetch(unsafe.Pointer(&d[min(off, PageSize-1)]))
}

// readOwned returns the current bytes of a row the caller has locked.
func (h *heap) readOwned(rid uint64) []byte {
	pg, slot := splitRID(rid)
	d := h.ref(pg).data.Load()
	off, n := loadLoc(d, slot)
	return d[off : off+n : off+n]
}

// tid returns a row's TID word without waiting.
func (h *heap) tid(rid uint64) uint64 {
	pg, slot := splitRID(rid)
	return h.ref(pg).tids[slot].Load()
}

// lock sets the lock bit of a row's TID word, waiting while another
// transaction holds it. It returns the TID word as it was before locking.
// An absent row is not locked (ok is false): its slot is free, and an
// insert that takes it stores its TID word without asking, so a lock
// there, and the restore that would follow it, could clobber a new row.
func (h *heap) lock(rid uint64) (prev uint64, ok bool) {
	pg, slot := splitRID(rid)
	w := &h.ref(pg).tids[slot]
	for spin := 0; ; spin++ {
		t := w.Load()
		if t&tidLocked == 0 {
			if t&tidAbsent != 0 {
				return t, false
			}
			if w.CompareAndSwap(t, t|tidLocked) {
				return t, true
			}
		}
		backoff(spin)
	}
}

// setTID stores a TID word: the unlock of a locked row.
func (h *heap) setTID(rid uint64, tid uint64) {
	pg, slot := splitRID(rid)
	h.ref(pg).tids[slot].Store(tid)
}

// replace writes a new version of a locked row into its page. It returns
// false when the page has no room even after compaction; the caller then
// moves the row. keep, if not nil, sees the old version first (snapshots).
// overwrite lets a version of the old one's size take its place, when
// nothing reads the heap (a Replayer) and keep is nil: readers do not
// copy what they read.
func (h *heap) replace(rid uint64, rec []byte, keep func(pg, slot int, old []byte), overwrite bool) bool {
	pg, slot := splitRID(rid)
	p := h.page(pg)
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.data.Load()
	off, n := loadLoc(d, slot)
	if overwrite && keep == nil && n == len(rec) {
		copy(d[off:off+n], rec)
		return true
	}
	if p.room(false)+n < len(rec) {
		return false
	}
	if keep != nil {
		keep(pg, slot, d[off:off+n:off+n])
	}
	// The old version becomes dead only after the new one is in place, but
	// its bytes may be compacted away by put, so count them first.
	atomic.StoreUint64(slotWord(d, slot), 0)
	p.dead += n
	p.put(slot, rec)
	return true
}

// remove empties the slot of a locked row and stores its final TID word.
// keep, if not nil, sees the old version first.
func (h *heap) remove(rid uint64, tid uint64, keep func(pg, slot int, old []byte)) {
	pg, slot := splitRID(rid)
	p := h.page(pg)
	p.mu.Lock()
	d := p.data.Load()
	if keep != nil {
		off, n := loadLoc(d, slot)
		keep(pg, slot, d[off:off+n:off+n])
	}
	p.tids[slot].Store(tid)
	p.clear(slot)
	if p.live == 0 && d != &emptyPage && int64(pg) != h.inserting.Load() {
		// Its slot directory stays: a snapshot not yet past the page
		// may hold old versions of its slots.
		p.data.Store(&emptyPage)
		p.end, p.dead, p.holes, p.hole = 0, 0, 0, 0
		h.released.Add(1)
	}
	// A page that is less than half full takes inserts again.
	relist := !p.listed && p.room(false) >= PageSize/2
	if relist {
		p.listed = true
	}
	p.mu.Unlock()
	if relist {
		h.allocMu.Lock()
		h.roomy = append(h.roomy, pg)
		h.allocMu.Unlock()
	}
}

// backoff waits a little before a retry: spin, then yield.
func backoff(spin int) {
	if spin < 16 {
		return
	}
	runtime.Gosched()
}

// each calls fn with every present row, page by page under the page latch,
// until fn returns false. The caller holds commits off, so no row is
// locked.
func (h *heap) each(fn func(rid uint64, row []byte) bool) {
	n := int(h.npages.Load())
	for pg := 0; pg < n; pg++ {
		p := h.page(pg)
		p.mu.Lock()
		d := p.data.Load()
		for slot := 0; slot < p.nslots; slot++ {
			if p.tids[slot].Load()&tidAbsent != 0 {
				continue
			}
			off, sz := loadLoc(d, slot)
			if !fn(ridOf(pg, slot), d[off:off+sz:off+sz]) {
				p.mu.Unlock()
				return
			}
		}
		p.mu.Unlock()
	}
}

// peek returns a row's TID word and, when it is neither locked nor absent,
// its bytes, without waiting. Validation uses it: waiting there, with locks
// held, could deadlock.
func (h *heap) peek(rid uint64) (uint64, []byte) {
	pg, slot := splitRID(rid)
	p := h.ref(pg)
	w := &p.tids[slot]
	for {
		t1 := w.Load()
		if t1&(tidLocked|tidAbsent) != 0 {
			return t1, nil
		}
		d := p.data.Load()
		off, n := loadLoc(d, slot)
		b := d[off : off+n : off+n]
		if t2 := w.Load(); t2 == t1 {
			return t1, b
		} else if t2&tidLocked != 0 {
			return t2, nil
		}
	}
}
