package checkpoint_test

import (
	"bytes"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/mem"
)

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// TestLoadStopsAtABadFrame: an image whose frames pass their checksums
// but whose rows do not load (every row too long for its table) fails
// at the first such frame: the load reads no further than the frames
// already under way, and reports that frame, not one error per frame of
// the image.
func TestLoadStopsAtABadFrame(t *testing.T) {
	src := mem.Open(mem.Options{})
	if _, err := src.CreateTable(mem.TableDef{Name: "t", Columns: []mem.ColumnDef{{Name: "k", Type: mem.TypeInt64}}, PrimaryKey: []string{"k"}}); err != nil {
		t.Fatal(err)
	}
	sn := src.Snapshot()
	def := sn.Tables()[0]
	sn.Close()
	defBytes := def.AppendBinary(nil)
	h := image.Header{LSN: 1, NextTable: uint64(def.ID) + 1, Tables: 1, Schema: image.SchemaSum(0, def.ID, defBytes)}
	var buf bytes.Buffer
	w, err := image.NewWriter(&buf, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Table(def.ID, defBytes); err != nil {
		t.Fatal(err)
	}
	row := bytes.Repeat([]byte{0xff}, 1000) // no row of t is this long
	frames := 16 * (runtime.GOMAXPROCS(0) + 2)
	for w.Totals().RowFrames < uint64(frames) {
		if err := w.Row(def.ID, row); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cr := &countingReader{r: bytes.NewReader(buf.Bytes())}
	_, _, err = checkpoint.LoadFrom(cr, "the test image", int64(buf.Len()), mem.Open(mem.Options{}), nil)
	if err == nil {
		t.Fatal("an image whose rows do not fit their table loaded")
	}
	if n := strings.Count(err.Error(), "frame at offset"); n != 1 {
		t.Errorf("the load's error names %d frames, want the one that failed: %.300s", n, err)
	}
	if cr.n > int64(buf.Len())/2 {
		t.Errorf("the load read %d of the image's %d bytes after its first frame failed", cr.n, buf.Len())
	}
}
