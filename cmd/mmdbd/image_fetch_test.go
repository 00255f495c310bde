package main

import (
	"bytes"
	"path/filepath"
	"regexp"
	"testing"

	"github.com/mmdb/mmdb/internal/servertest"
)

// TestImageFetchShowsProgress: mmdbd image fetch draws a progress bar
// on stderr, named by the image's LSN, up to the whole image; with
// -quiet it draws none (SPEC 7: progress is reported to the receiver).
func TestImageFetchShowsProgress(t *testing.T) {
	srv, addr := servertest.Start(t, nil)
	commitRows(t, srv, 0, 1000)
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
