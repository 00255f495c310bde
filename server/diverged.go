package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/pbmem"
	redolog "github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// A standby whose log diverged from its new primary's (it holds records
// from LSN at on that the primary never had: the old primary's tail)
// sets them aside and catches up (SPEC 6):
//
//  1. it writes the diverged records to diverged-<at>-<last>-<time>.jsonl in the
//     data dir, one JSON object per record (LSN and operations, with
//     table names and values), for the operator; when its log no longer
//     holds them all (a checkpoint released it, or the node keeps no
//     log), it writes an image of its whole database, which holds them,
//     to diverged-<at>-<last>-<time>.image instead;
//  2. it writes the LSN to cut its log after (at-1) to the file TRUNCATE;
//  3. it asks to be restarted (Restarts; mmdbd serve restarts itself,
//     without the checkpoint of a clean shutdown, which would hold the
//     diverged records);
//  4. the start that finds TRUNCATE loads an image at or below the cut,
//     replays the log up to it and sets the rest aside (the log voids it
//     when it opens), removes TRUNCATE and follows the new primary from
//     the cut on.
const truncateFile = "TRUNCATE"

// readTruncate returns the LSN a TRUNCATE file in dir says to cut the log
// after; zero when there is none.
func readTruncate(dir string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(dir, truncateFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("server: read %s: %w", truncateFile, err)
	}
	lsn, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil || lsn == 0 {
		return 0, fmt.Errorf("server: %s in %s holds %q, not an LSN: %v", truncateFile, dir, b, err)
	}
	return lsn, nil
}

// diverged handles a log that diverged from the primary's at LSN at (it
// holds records up to last that the primary never had), found while
// taking a link from sender (at addr); older says the diverged records
// belong to an epoch older than the sender's (a former primary's tail),
// not to a lost tail of the sender's own epoch. A former primary's tail
// is set aside and cut (or, without an image below it or a log to cut,
// the node is imaged again); records of the sender's own epoch, which a restarted
// primary lost and the standby alone holds, are kept: the node refuses
// the link and says so, for the operator (who may promote it instead).
// Records of the stretch this node led as a primary until it stepped down
// or was demoted (led) are a former primary's tail whatever their epoch:
// a sender at that epoch is another primary of it (two promoted at once,
// or one started from a copy), which never had them, not one that lost
// them.
func (s *Server) diverged(at, last uint64, sender, addr string, older bool) {
	log := s.log.With("from-lsn", at, "to-lsn", last, "primary", sender)
	s.markMu.Lock()
	if newest := s.epochs.Last(); !older && newest == s.led && at >= newest.Start {
		older = true
	}
	switch {
	case s.restarting || s.aside != 0 || s.divergedAt == at && s.divergedOlder == older:
		// Handled already (or under way); a divergence at the same LSN
		// found older now (a newer primary's, after one that lost the
		// records) is not: those records are set aside now.
		s.markMu.Unlock()
		return
	case !older:
		log.Error("this node holds records of its primary's epoch that the primary lost (it restarted without them): it keeps them and refuses the primary's log; promote this node, or image it again to drop them")
		s.divergedAt, s.divergedOlder = at, older
		s.markMu.Unlock()
		return
	case s.cfg.DataDir == "":
		log.Error("this node holds records its primary does not, and has no data dir to set them aside in: restart it to load an image of its bootstrap_from node's")
		s.divergedAt, s.divergedOlder = at, older
		s.markMu.Unlock()
		return
	}
	// The records are written out (from the log, or as a whole image)
	// without markMu, which a promotion, a shutdown and needsImage take:
	// s.aside marks the work under way instead. While it is set, a second
	// call returns at once (the Receiver calls this from one link at a
	// time, but nothing here relies on that), needsImage leaves the node
	// alone, and a promotion is refused as during a restart: a node
	// about to cut its log must not become a primary first, nor one whose
	// checkpoints are frozen for good. So when markMu is taken again,
	// nothing it guards has changed but by this call, and the marker and
	// restarting are set together under it, as before: a promotion sees
	// neither or both. A shutdown does not race the writes: it stops the
	// Receiver first, which waits for the link that called this.
	s.aside = at
	s.markMu.Unlock()
	name, canCut, ok := s.writeDiverged(at, last, log)
	s.markMu.Lock()
	defer s.markMu.Unlock()
	s.aside = 0
	if !ok {
		return
	}
	s.divergedAt, s.divergedOlder = at, older
	marker, content, why := truncateFile, fmt.Sprintf("%d\n", at-1), fmt.Sprintf("cut the log after LSN %d", at-1)
	if !canCut {
		m := reimageMark{addr: addr, node: sender}
		marker, content, why = reimageFile, string(m.bytes()), "load an image of "+m.String()+" (no image below the divergence)"
	}
	if err := vfs.WriteFile(vfs.Default, filepath.Join(s.cfg.DataDir, marker), []byte(content)); err != nil {
		log.Error("could not mark the node for a restart", "marker", marker, "error", err)
		if rerr := os.Remove(filepath.Join(s.cfg.DataDir, marker)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			log.Error("could not remove the marker", "marker", marker, "error", rerr)
		}
		return
	}
	s.restarting = true
	log.Warn("this node's log diverged from its primary's: the diverged records are set aside for the operator; restarting", "file",
		filepath.Join(s.cfg.DataDir, name), "to", why)
	select {
	case s.restart <- why:
	default:
	}
}

// writeImage is checkpoint.WriteImage; tests hold it up.
var writeImage = checkpoint.WriteImage

// writeDiverged freezes the checkpoints and writes the records from at
// to last to a file in the data dir (diverged), from the log or as an
// image of the whole database; it returns the file's name, whether the
// log can be cut below at (an image at or below the cut, with the log
// after it), and whether the records were set aside (it logs why not).
func (s *Server) writeDiverged(at, last uint64, log hclog.Logger) (name string, canCut, ok bool) {
	if s.ckpt != nil {
		// No image may hold the diverged records from now on (and none
		// is half written while the slots are looked at).
		s.ckpt.Freeze()
	}
	slots, err := checkpoint.Inspect(vfs.Default, checkpoint.Dir(s.cfg.DataDir), nil)
	canCut = err == nil && at > 1 && s.store.Level() != durability.NoLog && (slots.Newest.LSN == 0 || slots.Newest.LSN <= at-1 ||
		(slots.Older.LSN != 0 && slots.Older.LSN <= at-1))
	name = fmt.Sprintf("diverged-%d-%d-%d", at, last, time.Now().Unix())
	if err := s.setAside(at, last, name+".jsonl"); err != nil {
		// The database holds the records the log no longer does.
		name += ".image"
		img, ierr := writeImage(context.Background(), vfs.Default, filepath.Join(s.cfg.DataDir, name), s.db, s.epochs)
		if ierr != nil {
			log.Error("could not set the diverged records aside, from the log or as an image; the node goes on refusing its primary's log", "error", errors.Join(err, ierr))
			return "", false, false
		}
		log.Warn("the log does not hold the diverged records; an image of this node's database, which holds them, is set aside instead",
			"why", err, "file", img.Path, "image-lsn", img.LSN, "rows", img.Rows)
		return name, canCut, true
	}
	return name + ".jsonl", canCut, true
}

// setAside writes the records from at to last, read from the log, to
// name in the data dir, one JSON object per line; it fails unless it
// found every one of them.
func (s *Server) setAside(at, last uint64, name string) error {
	if s.store.Level() == durability.NoLog {
		return errors.New("server: this node keeps no log")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.store.Wait(ctx, last, durability.MmapLog); err != nil { // all written to the log files
		return fmt.Errorf("server: wait for the log up to LSN %d: %w", last, err)
	}
	r, err := s.store.ReadLog(at - 1)
	if err != nil || r == nil {
		return errors.Join(errors.New("server: this node's log cannot be read"), err)
	}
	var out bytes.Buffer
	next := at
	for {
		rec, ok, err := r.Next()
		if err != nil {
			return errors.Join(err, r.Close())
		}
		if !ok || rec.LSN > last {
			break
		}
		if rec.LSN != next {
			return errors.Join(fmt.Errorf("server: the log holds LSN %d where %d was due", rec.LSN, next), r.Close())
		}
		next++
		line, err := s.describe(rec.LSN, rec.Epoch, rec.Body)
		if err != nil {
			return errors.Join(err, r.Close())
		}
		out.Write(line)
		out.WriteByte('\n')
	}
	if err := r.Close(); err != nil {
		return fmt.Errorf("server: read the log: %w", err)
	}
	if next != last+1 {
		return fmt.Errorf("server: the log ends at LSN %d, before %d", next-1, last)
	}
	return vfs.WriteFile(vfs.Default, filepath.Join(s.cfg.DataDir, name), out.Bytes())
}

// describedOp is one operation of a set-aside record.
type describedOp struct {
	Op     string          `json:"op"`
	Table  string          `json:"table,omitempty"`
	Values json.RawMessage `json:"values,omitempty"` // a put's row or a delete's key, as a Row in protobuf JSON
	Error  string          `json:"error,omitempty"`
}

// describe renders a record as a JSON object.
func (s *Server) describe(lsn, epoch uint64, body []byte) ([]byte, error) {
	redo, err := mem.DecodeRedo(body)
	if err != nil {
		return nil, fmt.Errorf("server: LSN %d: %w", lsn, err)
	}
	ops := make([]describedOp, 0, len(redo.Ops))
	for _, op := range redo.Ops {
		d := describedOp{Op: op.Kind.String()}
		table, values, err := s.db.Describe(op)
		d.Table = table
		switch {
		case err != nil:
			d.Error = err.Error()
		case values != nil:
			if d.Values, err = protojson.Marshal(&pb.Row{Values: pbmem.Values(values)}); err != nil {
				return nil, fmt.Errorf("server: LSN %d: %w", lsn, err)
			}
		}
		ops = append(ops, d)
	}
	return json.Marshal(struct {
		LSN   uint64        `json:"lsn"`
		Epoch uint64        `json:"epoch"`
		Ops   []describedOp `json:"ops"`
	}{lsn, epoch, ops})
}

// A standby whose primary no longer holds the records after its applied
// LSN (it was away too long) reloads from an image of the primary's
// (SPEC 6): it writes the primary's name and address to the file REIMAGE
// in the data dir and asks to be restarted; the start that finds REIMAGE
// fetches the primary's image (reimage), then replaces the node's images,
// log and epoch history with it, and removes REIMAGE; the node then
// follows the log from the image's LSN. A diskless node restarts, and
// loads its bootstrap_from node's image. A standby whose diverged tail
// cannot be cut (no image below it) is imaged again the same way.
//
// REIMAGE is text, a field a line (builds before node= split it at any
// white space, and read the first two fields only):
//
//	<addr>         where to fetch the image: the address the primary gives of itself
//	replacing      (only once the replacement began: replacingMark)
//	node=<name>    the primary: the peer whose link, authenticated as that
//	               node's, sent this node for the image
//
// The certificate of the node at addr must name the node=: the address
// is the primary's own view of itself (its listen address, a wildcard
// host made its host name), which the peer list may spell otherwise or
// not hold, and node certificates name the node, not its hosts. A mark
// without node= (written by an older build) is fetched from as before:
// the certificate must name the peer at addr, or the host dialled when
// addr is no peer's; when that fails the node starts with what it has,
// and the primary sends it for an image again, which is marked with the
// node's name. An older build carries out a newer mark as it would its
// own ("replacing", when there, is still the second field), checking the
// certificate its own way.
const reimageFile = "REIMAGE"

// reimageMark is what a REIMAGE file says.
type reimageMark struct {
	addr      string
	node      string // empty in a mark of an older build
	replacing bool
}

// nodeField starts the field of a REIMAGE mark that names the node.
const nodeField = "node="

func (m reimageMark) bytes() []byte {
	b := []byte(m.addr + "\n")
	if m.replacing {
		b = append(b, replacingMark+"\n"...)
	}
	if m.node != "" {
		b = append(b, nodeField+m.node+"\n"...)
	}
	return b
}

// String names the node to fetch from, for logs and errors.
func (m reimageMark) String() string {
	if m.node == "" {
		return m.addr
	}
	return m.node + " at " + m.addr
}

// parseReimageMark reads a REIMAGE file's content; fields it does not
// know are skipped, as older builds skip node=.
func parseReimageMark(b []byte) (reimageMark, error) {
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return reimageMark{}, errors.New("it names no node to fetch an image from")
	}
	m := reimageMark{addr: fields[0]}
	for _, f := range fields[1:] {
		switch name, ok := strings.CutPrefix(f, nodeField); {
		case f == replacingMark:
			m.replacing = true
		case ok && name == "":
			return reimageMark{}, fmt.Errorf("%q names no node", f)
		case ok:
			m.node = name
		}
	}
	return m, nil
}

// needsImage asks for the restart that reloads the node from an image of
// sender, the node at addr.
func (s *Server) needsImage(sender, addr string, applied uint64) {
	log := s.log.With("primary", sender, "primary-addr", addr, "applied-lsn", applied)
	m := reimageMark{addr: addr, node: sender}
	s.markMu.Lock()
	defer s.markMu.Unlock()
	if s.restarting || s.aside != 0 {
		return
	}
	switch {
	case s.cfg.DataDir != "":
		if s.ckpt != nil {
			s.ckpt.Freeze()
		}
		if err := vfs.WriteFile(vfs.Default, filepath.Join(s.cfg.DataDir, reimageFile), m.bytes()); err != nil {
			log.Error("could not mark the node to be imaged again", "error", err)
			return
		}
	case s.cfg.BootstrapFrom == "":
		log.Error("the primary no longer holds the records this node needs, and it has no bootstrap_from to load an image from: restart it with one")
		return
	}
	s.restarting = true
	log.Warn("the primary no longer holds the records this node needs: restarting to load an image of the primary's")
	select {
	case s.restart <- "load an image of " + m.String():
	default:
	}
}

// replacingMark is the second line of a REIMAGE mark once the node's
// images and log are being replaced: a start that finds it has nothing
// of its own left to start with.
const replacingMark = "replacing"

// reimage carries out a REIMAGE mark in cfg's data dir, if there is one
// (see needsImage). The image is fetched and checked first, into a
// directory of its own; only then are the node's images, log and epoch
// history removed and the image moved into its checkpoint slot. When
// the fetch fails the node starts with what it had, and tries again at
// its next start; unless a start before stopped mid-way through the
// replacement (replacingMark), which left the node nothing to start
// with: then the start is refused, not made with an empty database.
func reimage(cfg *conf.Config, sec *security, logger hclog.Logger) error {
	mark := filepath.Join(cfg.DataDir, reimageFile)
	b, err := os.ReadFile(mark)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("server: read %s: %w", reimageFile, err)
	}
	m, err := parseReimageMark(b)
	if err != nil {
		return fmt.Errorf("server: %s: %w", mark, err)
	}
	from, replacing := m.addr, m.replacing
	staging := filepath.Join(cfg.DataDir, "reimage")
	if err := os.RemoveAll(staging); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	var img checkpoint.Image
	var hist []replica.EpochStart
	err = replica.Fetch(context.Background(), from, replica.FetchOptions{Logger: logger, ProgressEvery: progressEvery, DialOptions: []grpc.DialOption{sec.dialNode(from, m.node)}}, func(st *replica.ImageStream) error {
		var err error
		img, err = checkpoint.Install(vfs.Default, staging, bufio.NewReaderSize(st, 1<<20))
		hist = st.Epochs()
		return err
	})
	if err != nil {
		if replacing {
			return fmt.Errorf("server: this node stopped while replacing its database with an image of %s, so it has none of its own left, and the image cannot be fetched now: start it again once %s serves one: %w", m, from, err)
		}
		logger.Error("could not fetch an image to replace this node's database; starting with what it has, and trying again at the next start",
			"from", from, "from-node", m.node, "error", err)
		if err := os.RemoveAll(staging); err != nil {
			return fmt.Errorf("server: %w", err)
		}
		return nil
	}
	logger.Warn("replacing this node's database with an image of its primary's", "from", from, "from-node", m.node, "lsn", img.LSN)
	m.replacing = true
	if err := vfs.WriteFile(vfs.Default, mark, m.bytes()); err != nil {
		return fmt.Errorf("server: mark the replacement begun: %w", err)
	}
	ckptDir := checkpoint.Dir(cfg.DataDir)
	if err := checkpoint.RemoveImages(vfs.Default, ckptDir); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	// The log goes, and with it the mark that the start must find one.
	if err := vfs.RemoveDurable(vfs.Default, filepath.Join(cfg.DataDir, loggedFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("server: %w", err)
	}
	if err := redolog.RemoveSegments(vfs.Default, cfg.LogDirs()); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	// A cut the old log was marked for means nothing to the new one.
	for _, name := range []string{"EPOCHS", "EPOCHS.tmp", truncateFile} {
		if err := os.Remove(filepath.Join(cfg.DataDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("server: %w", err)
		}
	}
	// The node follows the primary it took the image from: with the
	// image's history taken as followed (Adopt), a start as a primary
	// would not make it a second primary of that primary's epoch.
	epochs, err := replica.OpenEpochs(vfs.Default, cfg.DataDir)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if len(hist) > 0 {
		if err := epochs.Adopt(hist); err != nil {
			return fmt.Errorf("server: take the image's epoch history: %w", err)
		}
	}
	if err := os.MkdirAll(ckptDir, 0o755); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := os.Rename(img.Path, filepath.Join(ckptDir, filepath.Base(img.Path))); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := errors.Join(vfs.Default.SyncDir(ckptDir), os.RemoveAll(staging)); err != nil {
		return err
	}
	if err := vfs.RemoveDurable(vfs.Default, mark); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}
