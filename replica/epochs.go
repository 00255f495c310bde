package replica

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/logging/vfs"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// EpochStart is where a stretch of a primary's log began: its first LSN,
// its epoch, and the incarnation of the primary within that epoch
// (random; zero for the history's first stretch). Images carry them as
// they are (checkpoint/image).
type EpochStart = image.Stretch

// Epochs is a node's epoch history (SPEC 6): epoch 0 starts at LSN 1;
// each promotion starts the next epoch at the node's last LSN plus one
// (Promote), and each start of a primary starts a new incarnation of its
// epoch there (Restart): a primary that restarts may have lost a tail of
// its log that a standby holds, and its new records reuse those LSNs.
// Only promotions change the epoch, which fences old primaries; the
// incarnation tells lost tails from new records. A standby takes its
// primary's history. Two nodes' logs agree up to the first LSN at which
// their histories name a different stretch (Diverged).
//
// A node whose newest stretch it took from a sender (Adopt), not began
// itself (Promote, Restart), follows another primary's log (Follows): a
// "follows" line says so. A node that stepped down for another primary
// (Observe), and has neither followed one nor begun a stretch since, has
// a "down" line (SteppedDown).
//
// With a directory, the history is kept in the file EPOCHS there, one
// "epoch start incarnation" line per stretch, replaced atomically
// (written, synced, renamed, directory synced) before a change takes
// effect. Safe for concurrent use.
type Epochs struct {
	fs   vfs.FS
	path string // "" keeps the history in memory only (a diskless node)

	mu      sync.Mutex
	hist    []EpochStart
	seen    uint64 // the newest epoch heard of (kept as a "seen" line)
	follows bool   // the newest stretch was adopted (kept as a "follows" line)
	down    bool   // it stepped down (Observe) and has not followed or begun a stretch since (kept as a "down" line)
	known   uint64 // the history says nothing of the LSNs up to it (Trust)
	fresh   bool   // nothing was kept yet
}

// epochsFile is the name of the history in a data directory.
const epochsFile = "EPOCHS"

// OpenEpochs reads the history kept in dir, if any; an empty dir keeps it
// in memory.
func OpenEpochs(fs vfs.FS, dir string) (*Epochs, error) {
	e := &Epochs{fs: fs, hist: []EpochStart{{Epoch: 0, Start: 1}}, fresh: true}
	if dir == "" {
		return e, nil
	}
	e.path = filepath.Join(dir, epochsFile)
	f, err := fs.Open(e.path)
	if errors.Is(err, os.ErrNotExist) {
		return e, nil
	}
	e.fresh = false
	if err != nil {
		return nil, fmt.Errorf("replica: open the epoch history: %w", err)
	}
	size, err := f.Size()
	if err == nil {
		b := make([]byte, size)
		if _, err = f.ReadAt(b, 0); errors.Is(err, io.EOF) {
			err = nil
		}
		if err == nil {
			e.hist, e.seen, e.follows, e.down, err = parseEpochs(string(b))
		}
	}
	if err = errors.Join(err, f.Close()); err != nil {
		return nil, fmt.Errorf("replica: read the epoch history %s: %w", e.path, err)
	}
	return e, nil
}

// parseEpochs reads "epoch start incarnation" lines (checkEpochs), then
// an optional "seen epoch" line, an optional "follows" line and an
// optional "down" line.
func parseEpochs(s string) (hist []EpochStart, seen uint64, follows, down bool, err error) {
	for i, line := range strings.Split(strings.TrimSpace(s), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == "seen" {
			if seen, err = strconv.ParseUint(f[1], 10, 64); err != nil {
				return nil, 0, false, false, fmt.Errorf("line %d: %w", i+1, err)
			}
			continue
		}
		if len(f) == 1 && f[0] == "follows" {
			follows = true
			continue
		}
		if len(f) == 1 && f[0] == "down" {
			down = true
			continue
		}
		if len(f) != 3 {
			return nil, 0, false, false, fmt.Errorf("line %d: %q is not \"epoch start incarnation\"", i+1, line)
		}
		ep, err1 := strconv.ParseUint(f[0], 10, 64)
		st, err2 := strconv.ParseUint(f[1], 10, 64)
		inc, err3 := strconv.ParseUint(f[2], 16, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, 0, false, false, fmt.Errorf("line %d: %w", i+1, err)
		}
		hist = append(hist, EpochStart{Epoch: ep, Start: st, Incarnation: inc})
	}
	if err := checkEpochs(hist); err != nil {
		return nil, 0, false, false, err
	}
	return hist, seen, follows, down, nil
}

// checkEpochs checks a history: not empty, the first stretch starting at
// LSN 1, epochs not falling (and rising where the incarnation repeats),
// starts not falling.
func checkEpochs(hist []EpochStart) error {
	if len(hist) == 0 || hist[0].Start != 1 {
		return errors.New("the first epoch must start at LSN 1")
	}
	for i := 1; i < len(hist); i++ {
		a, b := hist[i-1], hist[i]
		if b.Epoch < a.Epoch || b.Epoch == a.Epoch && b.Incarnation == a.Incarnation || b.Start < a.Start {
			return fmt.Errorf("epoch %d at LSN %d follows epoch %d at LSN %d", hist[i].Epoch, hist[i].Start, hist[i-1].Epoch, hist[i-1].Start)
		}
	}
	return nil
}

// Current returns the newest epoch.
func (e *Epochs) Current() uint64 { return e.Last().Epoch }

// Last returns the newest stretch of the history.
func (e *Epochs) Last() EpochStart {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.hist[len(e.hist)-1]
}

// At returns the epoch of the record at LSN lsn: that of the stretch it
// belongs to (0 for records the history takes on trust, Trust).
func (e *Epochs) At(lsn uint64) uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return stretchAt(e.hist, lsn).Epoch
}

// Image returns the history an image of this node's data at LSN lsn
// carries (the stretches that start at or below it), or nil when the
// node holds records up to Known on trust and cannot say.
func (e *Epochs) Image(lsn uint64) []EpochStart {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.known > 0 {
		return nil
	}
	var out []EpochStart
	for _, h := range e.hist {
		if h.Start <= max(lsn, 1) {
			out = append(out, h)
		}
	}
	return out
}

// History returns a copy of the history.
func (e *Epochs) History() []EpochStart {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]EpochStart(nil), e.hist...)
}

// Promote starts a new epoch at LSN start (the node's last LSN plus one),
// newer than any it has held or heard of, and returns it, once the
// history is kept.
func (e *Epochs) Promote(start uint64) (uint64, error) {
	return e.begin(start, 1)
}

// Observe notes that another node is at epoch (this one steps down for
// it), so a later promotion here goes past it, and that this node stepped
// down (SteppedDown); it returns once that is kept.
func (e *Epochs) Observe(epoch uint64) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	current := e.hist[len(e.hist)-1].Epoch
	if epoch < current || epoch == current && e.follows {
		return nil // late: it follows a primary of that epoch, or a newer one, already
	}
	seen := e.seen
	if epoch > max(e.seen, current) {
		seen = epoch
	}
	if seen == e.seen && e.down {
		return nil
	}
	if err := e.save(e.hist, seen, e.follows, true); err != nil {
		return err
	}
	e.seen, e.down = seen, true
	return nil
}

// Trust says the node holds records up to LSN upto of which the history
// says nothing (they came in an image, on a node that kept no history):
// Known returns it, and the records up to it are taken to agree with any
// sender's, until a sender's history is adopted.
func (e *Epochs) Trust(upto uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.known = upto
}

// Known returns the LSN up to which the history is taken on trust.
func (e *Epochs) Known() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.known
}

// Seen returns the newest epoch heard of from another node (Observe).
func (e *Epochs) Seen() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.seen
}

// Follows reports whether the newest stretch of the history was taken
// from a sender (Adopt) rather than begun here (Promote, Restart): the
// node's log follows another primary's, and a start as a primary would
// make two primaries of one epoch.
func (e *Epochs) Follows() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.follows
}

// SteppedDown reports whether the node stepped down for another primary
// (Observe), of a newer epoch or of its own (two promoted at once), and
// has neither followed a sender (Adopt) nor begun a stretch (Promote,
// Restart) since: a start as a primary would take writes again in an
// epoch it gave up.
func (e *Epochs) SteppedDown() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.down
}

// Fresh reports whether the node has never kept a history.
func (e *Epochs) Fresh() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fresh
}

// Restart starts a new incarnation of the current epoch at LSN start (a
// primary's last recovered LSN plus one) and returns the epoch, once the
// history is kept.
func (e *Epochs) Restart(start uint64) (uint64, error) {
	return e.begin(start, 0)
}

// begin starts a stretch of epoch current+step at start. Stretches that
// began at or after start are dropped: the node no longer holds their
// records.
func (e *Epochs) begin(start, step uint64) (uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	next := e.hist[len(e.hist)-1].Epoch + step
	if step > 0 {
		next = max(next, e.seen+1)
	}
	var hist []EpochStart
	for _, h := range e.hist {
		if h.Start < start {
			hist = append(hist, h)
		}
	}
	inc := rand.Uint64() | 1 // never the first stretch's zero
	hist = append(hist, EpochStart{Epoch: next, Start: max(start, 1), Incarnation: inc})
	if err := e.save(hist, e.seen, false, false); err != nil {
		return 0, err
	}
	e.hist, e.follows, e.down, e.fresh = hist, false, false, false
	return next, nil
}

// Adopt takes a sender's history as its own, once it is kept; the caller
// has checked that the two do not diverge (Diverged). The node then
// follows that sender's log (Follows).
func (e *Epochs) Adopt(hist []EpochStart) error {
	return e.take(hist, true)
}

// FromImage takes the history an image came with (ImageStream.Epochs) as
// the node's, once it is kept: the node holds that image's records and no
// others. It follows no one yet: a node that starts as a primary from an
// image begins a stretch of its own there (Restart).
func (e *Epochs) FromImage(hist []EpochStart) error {
	return e.take(hist, false)
}

func (e *Epochs) take(hist []EpochStart, follows bool) error {
	if err := checkEpochs(hist); err != nil {
		return fmt.Errorf("replica: a bad epoch history: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if slices.Equal(e.hist, hist) && e.follows == follows && !e.down {
		return nil
	}
	if hist[len(hist)-1].Epoch < e.hist[len(e.hist)-1].Epoch {
		return fmt.Errorf("replica: a history ending at epoch %d would replace one at epoch %d", hist[len(hist)-1].Epoch, e.hist[len(e.hist)-1].Epoch)
	}
	hist = append([]EpochStart(nil), hist...)
	seen := e.seen
	if hist[len(hist)-1].Epoch >= seen {
		seen = 0 // caught up with what it heard of
	}
	// Nothing changes until the history is kept: a node whose save
	// failed still knows of the epoch it heard of.
	if err := e.save(hist, seen, follows, false); err != nil {
		return err
	}
	e.hist, e.seen, e.follows, e.down, e.known, e.fresh = hist, seen, follows, false, 0, false
	return nil
}

// save writes hist, seen, follows and down to the file, durably; the
// caller holds mu.
func (e *Epochs) save(hist []EpochStart, seen uint64, follows, down bool) error {
	if e.path == "" {
		return nil
	}
	var b strings.Builder
	for _, h := range hist {
		fmt.Fprintf(&b, "%d %d %x\n", h.Epoch, h.Start, h.Incarnation)
	}
	if seen > 0 {
		fmt.Fprintf(&b, "seen %d\n", seen)
	}
	if follows {
		b.WriteString("follows\n")
	}
	if down {
		b.WriteString("down\n")
	}
	if err := vfs.WriteFile(e.fs, e.path, []byte(b.String())); err != nil {
		return fmt.Errorf("replica: keep the epoch history: %w", err)
	}
	return nil
}

// stretchAt returns the stretch of hist that LSN lsn belongs to.
func stretchAt(hist []EpochStart, lsn uint64) EpochStart {
	at := hist[0]
	for _, h := range hist {
		if h.Start > lsn {
			break
		}
		at = h
	}
	at.Start = 0 // only the epoch and incarnation name it
	return at
}

// Diverged returns the first LSN in (known, last] (last: the receiver's
// last LSN; up to known it takes the two to agree, see Trust) that
// belongs to a different stretch (epoch or incarnation) in the receiver's
// history mine than in the sender's theirs: from there on, the receiver
// holds records the sender never wrote. ok is false when they agree up to
// last.
func Diverged(mine, theirs []EpochStart, known, last uint64) (lsn uint64, ok bool) {
	starts := []uint64{known + 1}
	for _, h := range mine {
		starts = append(starts, h.Start)
	}
	for _, h := range theirs {
		starts = append(starts, h.Start)
	}
	first := uint64(0)
	for _, s := range starts {
		if s > known && s <= last && stretchAt(mine, s) != stretchAt(theirs, s) && (first == 0 || s < first) {
			first = s
		}
	}
	return first, first != 0
}

func epochsToPB(hist []EpochStart) []*pb.EpochStart {
	out := make([]*pb.EpochStart, len(hist))
	for i, h := range hist {
		out[i] = &pb.EpochStart{Epoch: h.Epoch, StartLsn: h.Start, Incarnation: h.Incarnation}
	}
	return out
}

func epochsFromPB(hist []*pb.EpochStart) []EpochStart {
	out := make([]EpochStart, len(hist))
	for i, h := range hist {
		out[i] = EpochStart{Epoch: h.GetEpoch(), Start: h.GetStartLsn(), Incarnation: h.GetIncarnation()}
	}
	return out
}
