package server

import (
	"errors"
	"fmt"
	"syscall"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// TestTooLargeIsToldApart: a redo record over the log's limit and a full
// disk are both RESOURCE_EXHAUSTED, but only the first carries the
// TOO_LARGE detail: a client may split that write, not the other.
func TestTooLargeIsToldApart(t *testing.T) {
	tooLarge := func(err error) bool {
		serr := toStatus(err)
		if code := status.Code(serr); code != codes.ResourceExhausted {
			t.Fatalf("%v: %s, want RESOURCE_EXHAUSTED", err, code)
		}
		return hasReason(serr, pb.ReasonTooLarge)
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

// TestUnavailableIsRefused: every UNAVAILABLE the node answers carries
// the REFUSED mark, whether toStatus makes it of an engine error or the
// server of its own (errorf), wrapped or not; other codes do not. The
// client runs a write again elsewhere only after the mark: an
// UNAVAILABLE without it may be that of a proxy that lost the node after
// the write committed.
func TestUnavailableIsRefused(t *testing.T) {
	for _, err := range []error{
		toStatus(fmt.Errorf("commit: %w", logging.ErrFailed)),
		toStatus(fmt.Errorf("commit: %w", logging.ErrClosed)),
		toStatus(fmt.Errorf("get: %w", mem.ErrBuilding)),
		toStatus(fmt.Errorf("operation 2: %w", errorf(codes.Unavailable, "the server is shutting down"))),
		errorf(codes.Unavailable, "promote: the node is shutting down"),
	} {
		if status.Code(err) != codes.Unavailable || !hasReason(err, pb.ReasonRefused) {
			t.Errorf("%v: %s without the REFUSED mark", err, status.Code(err))
		}
	}
	for _, err := range []error{
		toStatus(fmt.Errorf("commit: %w", syscall.ENOSPC)),
		toStatus(errors.New("something else")),
		errorf(codes.InvalidArgument, "a bad request"),
	} {
		if hasReason(err, pb.ReasonRefused) {
			t.Errorf("%v: %s with the REFUSED mark", err, status.Code(err))
		}
	}
}

// hasReason says whether err carries an ErrorInfo detail of domain
// pb.ErrorDomain and reason.
func hasReason(err error, reason string) bool {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == pb.ErrorDomain && info.GetReason() == reason {
			return true
		}
	}
	return false
}
