package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mmdb/mmdb/internal/grpctest"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestDivergedTailSetAsideAsImage: a former primary whose log no longer
// holds the tail it took alone (at no-log it keeps none; at mmap-log two
// checkpoints released the segments) still sets that tail aside when it
// meets the new primary (SPEC 6: never silently drops it): as an image of
// its whole database, from which an operator can start a node. It is
// then imaged again from the new primary and follows it. Before, it
// refused the new primary's log for good.
//
// It comes back with a file that makes it a standby (as operations.md
// says), restarts itself to take the image, and is then switched back to
// primary by its file and SIGHUP: the restart used to add -role standby
// to its arguments, which overrode the file at every SIGHUP after.
func TestDivergedTailSetAsideAsImage(t *testing.T) {
	for _, level := range []string{"no-log", "mmap-log"} {
		t.Run(level, func(t *testing.T) { divergedAsImage(t, level) })
	}
}

func divergedAsImage(t *testing.T, level string) {
	aAddr, aDir := grpctest.DeadAddr(t), t.TempDir()
	b := start(t, "-node", "b", "-role", "standby", "-durability", "mmap-log", "-peer", "a="+aAddr)
	alone := []string{"-node", "a", "-listen", aAddr, "-durability", level, "-data-dir", aDir, "-log-retention-bytes", "0"}
	aArgs := append(alone, "-sync-mode", "applied-ack", "-peer", "b="+b.addr)
	a := start(t, aArgs...)
	adb, _ := a.client()
	createBank(t, adb)
	stop := func() {
		t.Helper()
		if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := a.wait(); code != 0 {
			t.Fatalf("a stopped with %d:\n%s", code, a.output())
		}
	}
	stop()
	if out, errOut, code := runTool(t, "promote", "-addr", b.addr); code != 0 {
		t.Fatalf("promote: %d %s %s", code, out, errOut)
	}

	// The old primary, alone, takes commits b never gets.
	a = start(t, alone...)
	adb, _ = a.client()
	marks := []int64{-100, -101, -102}
	for _, m := range marks {
		if _, err := adb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(m)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if level != "no-log" {
		// Past the first 64 MiB segment, which the second checkpoint
		// releases: the log then starts after the marks.
		fillBlobs(t, adb, 70000)
		for i := range int64(2) {
			if out, errOut, code := runTool(t, "checkpoint", "-addr", a.addr); code != 0 {
				t.Fatalf("checkpoint: %d %s %s", code, out, errOut)
			}
			if _, err := adb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-200 - i)}}}); err != nil {
				t.Fatal(err)
			}
		}
		if !strings.Contains(a.output(), "released-segments=1") {
			t.Fatalf("the checkpoints released no log:\n%s", a.output())
		}
	}
	stop()

	// Back as a standby, it sets its tail aside, is imaged again and
	// follows b.
	cfgDir := t.TempDir()
	file := func(role string) string {
		return writeConfig(t, cfgDir, "a", fmt.Sprintf("role = %q\ndurability = %q\nlog_retention_bytes = 0\nsync_mode = \"applied-ack\"\n", role, level), "b", b.addr)
	}
	a = start(t, "-config", file("standby"), "-listen", aAddr, "-data-dir", aDir)
	_, bconn := b.client()
	streaming(t, pb.NewAdminServiceClient(bconn), 90*time.Second, a)
	if !strings.Contains(a.output(), "replacing this node's database with an image") {
		t.Fatalf("the old primary was not imaged again:\n%s", a.output())
	}
	images, err := filepath.Glob(filepath.Join(aDir, "diverged-*.image"))
	if err != nil {
		t.Fatal(err)
	}
	if len(images) != 1 {
		t.Fatalf("the diverged tail was set aside as %v:\n%s", images, a.output())
	}
	if jsonl, _ := filepath.Glob(filepath.Join(aDir, "diverged-*.jsonl")); len(jsonl) != 0 {
		t.Fatalf("records set aside from a log that lacks some: %v", jsonl)
	}
	bdb, _ := b.client()
	adb, _ = a.client()
	sameRows(t, bdb, adb)

	// The image holds the tail: a node started from it has the marks.
	c := start(t, "-node", "c", "-from-image", images[0])
	cdb, _ := c.client()
	for _, m := range marks {
		r, err := cdb.Get(testCtx(t), &pb.GetRequest{Table: "mark", Key: []*pb.Value{vInt(m)}})
		if err != nil || !r.GetFound() {
			t.Fatalf("mark %d, taken alone by the old primary, in the set-aside image: %v %v", m, r, err)
		}
	}
	if _, err := os.Stat(filepath.Join(aDir, "REIMAGE")); !os.IsNotExist(err) {
		t.Fatalf("REIMAGE is left: %v", err)
	}

	// Switched back by the files: b demoted, a's file says primary.
	if out, errOut, code := runTool(t, "demote", "-addr", b.addr); code != 0 {
		t.Fatalf("demote: %d %s %s", code, out, errOut)
	}
	file("primary")
	hup(t, a)
	_, aconn := a.client()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		st, err := pb.NewAdminServiceClient(aconn).Status(testCtx(t), &pb.StatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if st.GetRole() == "primary" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a's file says primary, and after SIGHUP it is a %s:\n%s", st.GetRole(), a.output())
		}
	}
	if _, err := adb.Insert(testCtx(t), &pb.InsertRequest{Table: "mark", Row: &pb.Row{Values: []*pb.Value{vInt(-300)}}}); err != nil {
		t.Fatalf("a write on a, primary again: %v", err)
	}
}
