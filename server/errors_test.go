package server

import (
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/logging"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestTooLargeIsToldApart: a redo record over the log's limit and a full
// disk are both RESOURCE_EXHAUSTED, but only the first carries the
// TOO_LARGE detail: a client may split that write, not the other.
func TestTooLargeIsToldApart(t *testing.T) {
	tooLarge := func(err error) bool {
		st := status.Convert(toStatus(err))
		if st.Code() != codes.ResourceExhausted {
			t.Fatalf("%v: %s, want RESOURCE_EXHAUSTED", err, st.Code())
		}
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == pb.ReasonTooLarge && info.GetDomain() == pb.ErrorDomain {
				return true
			}
		}
		return false
	}
	if !tooLarge(fmt.Errorf("commit: %w", logging.ErrTooLarge)) {
		t.Error("a record over the log's limit has no TOO_LARGE detail")
	}
	for _, full := range []error{syscall.ENOSPC, syscall.EDQUOT} { // a disk quota used up is a full disk
		if tooLarge(fmt.Errorf("commit: %w", full)) {
			t.Errorf("a full disk (%v) has the TOO_LARGE detail", full)
		}
	}
}
