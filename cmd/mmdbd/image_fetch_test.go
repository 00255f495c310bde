package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/mmdb/mmdb/internal/servertest"
	"github.com/mmdb/mmdb/mem"
)

// TestImageFetchShowsProgress: mmdbd image fetch draws a progress bar
// on stderr, named by the image's LSN, up to the whole image; with
// -quiet it draws none (SPEC 7: progress is reported to the receiver).
func TestImageFetchShowsProgress(t *testing.T) {
	srv, addr := servertest.Start(t, nil)
	db := srv.DB()
	tbl, err := db.CreateTable(mem.TableDef{Name: "kv", Columns: []mem.ColumnDef{
		{Name: "k", Type: mem.TypeInt64}, {Name: "v", Type: mem.TypeString, MaxLen: 64},
	}, PrimaryKey: []string{"k"}})
	if err != nil {
		t.Fatal(err)
	}
	tx := db.Begin()
	for k := range int64(1000) {
		if err := tx.Insert(tbl, []mem.Value{mem.Int64(k), mem.String("a value to fill the image a little")}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	bar := regexp.MustCompile(`image at LSN \d+ +100% \|`)
	for _, quiet := range []bool{false, true} {
		args := []string{"-from", addr, "-out", filepath.Join(t.TempDir(), "backup.mmdb")}
		if quiet {
			args = append(args, "-quiet")
		}
		var stdout, stderr bytes.Buffer
		if err := imageFetch(args, &stdout, &stderr); err != nil {
			t.Fatalf("image fetch %q: %v\n%s", args, err, stderr.String())
		}
		if shown := bar.MatchString(stderr.String()); shown == quiet {
			t.Errorf("image fetch %q: a whole progress bar on stderr: %v, want %v; stderr:\n%s", args, shown, !quiet, stderr.String())
		}
	}
}
