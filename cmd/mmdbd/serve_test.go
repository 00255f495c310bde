package main

import (
	"os"
	"syscall"
	"testing"
	"time"
)

// TestSIGTERMIsNotLostBehindASIGHUP: a SIGTERM that comes while a SIGHUP
// waits to be taken (a second SIGHUP during a reload) reaches serve. On
// a channel shared with SIGHUP, of one slot, the signal package dropped
// it, and the node went on running.
func TestSIGTERMIsNotLostBehindASIGHUP(t *testing.T) {
	sigs := notifySignals()
	defer sigs.close()
	sigs.notifyStop()
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(sigs.hup) == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("SIGHUP did not arrive")
		}
	}
	// serve is busy (a reload): nothing reads the channels now.
	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-sigs.stop:
		if sig != syscall.SIGTERM {
			t.Fatalf("got %v, want SIGTERM", sig)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the SIGTERM sent while a SIGHUP waited never arrived")
	}
}
