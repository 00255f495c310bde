package server

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// codeOf maps the engine's errors to gRPC codes (SPEC section 11).
var codeOf = []struct {
	err  error
	code codes.Code
}{
	{mem.ErrCorrupt, codes.DataLoss}, // first: it wraps what it found wrong (a duplicate key a standby's rows hold, say)
	{mem.ErrNoTable, codes.NotFound},
	{mem.ErrNoIndex, codes.NotFound},
	{mem.ErrNotFound, codes.NotFound},
	{mem.ErrNoColumn, codes.InvalidArgument},
	{mem.ErrType, codes.InvalidArgument},
	{mem.ErrNull, codes.InvalidArgument},
	{mem.ErrTooLong, codes.InvalidArgument},
	{mem.ErrInvalid, codes.InvalidArgument},
	{mem.ErrTableExist, codes.AlreadyExists},
	{mem.ErrIndexExist, codes.AlreadyExists},
	{mem.ErrDuplicate, codes.AlreadyExists},
	{mem.ErrNotUnique, codes.FailedPrecondition}, // not ALREADY_EXISTS, which would say the index is there
	{mem.ErrConflict, codes.Aborted},
	{mem.ErrTxDone, codes.FailedPrecondition},
	{mem.ErrLimit, codes.ResourceExhausted},
	{mem.ErrBuilding, codes.Unavailable},              // a standby's index not built yet: read again
	{durability.ErrStandby, codes.FailedPrecondition}, // a write on a standby: the message names the primary
	// Before ENOSPC: a log that an ENOSPC from a sync failed takes no
	// more writes, ever (docs/operations.md), unlike a full disk.
	{logging.ErrFailed, codes.Unavailable},         // the log failed: the node takes no more writes
	{logging.ErrClosed, codes.Unavailable},         // shutting down
	{syscall.ENOSPC, codes.ResourceExhausted},      // the log's disk is full: the commit was refused
	{syscall.EDQUOT, codes.ResourceExhausted},      // the same, of a disk quota
	{logging.ErrTooLarge, codes.ResourceExhausted}, // a transaction's redo record over the log's limit
	{context.Canceled, codes.Canceled},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
}

// toStatus turns an error into a gRPC status error. Errors that already are
// statuses pass through; engine errors get their code (newStatus) and lose
// the "mem: " prefix, which says nothing to a client; anything else is
// INTERNAL.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if s, ok := status.FromError(err); ok {
		return s.Err()
	}
	if se := (*durability.StandbyError)(nil); errors.As(err, &se) {
		// The client library follows the primary this names (SPEC 8).
		st, derr := status.New(codes.FailedPrecondition, strings.ReplaceAll(err.Error(), "mem: ", "")).
			WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonNotPrimary, Metadata: map[string]string{pb.MetadataPrimary: se.Addr}})
		if derr == nil {
			return st.Err()
		}
	}
	msg := strings.ReplaceAll(err.Error(), "mem: ", "")
	if errors.Is(err, logging.ErrTooLarge) {
		return withReason(codes.ResourceExhausted, pb.ReasonTooLarge, msg, nil)
	}
	for _, m := range codeOf {
		if errors.Is(err, m.err) {
			return newStatus(m.code, msg).Err()
		}
	}
	return status.Error(codes.Internal, msg)
}

// notDurable is the answer to a commit at lsn that is in memory but
// whose record the log keeps out of it (err). A full disk holds the
// record back until space is freed: RESOURCE_EXHAUSTED, as for a write
// the full disk refused, with the NOT_DURABLE detail that tells the two
// apart. A log that failed (an I/O error, ENOSPC from a sync) never
// writes it: INTERNAL with the same detail. Neither is UNAVAILABLE,
// which clients answer by running the write again elsewhere, and it is
// made here.
func notDurable(lsn uint64, level durability.Level, err error) error {
	if errors.Is(err, logging.ErrFull) {
		return withLSNReason(codes.ResourceExhausted, pb.ReasonNotDurable, lsn, fmt.Sprintf("the disk is full: the commit at LSN %d is in memory but not %s (reads that see it fail until it is); it will be once space is freed, unless the node stops first, and the node takes no writes until then: %v", lsn, level, err))
	}
	return withLSNReason(codes.Internal, pb.ReasonNotDurable, lsn, fmt.Sprintf("the redo log failed: the commit at LSN %d is in memory but not %s, and it will be lost when the node stops; the node takes no more writes: %v", lsn, level, err))
}

// newStatus returns the status of code with msg. An UNAVAILABLE gets the
// ErrorInfo of reason pb.ReasonRefused: the node answers UNAVAILABLE only
// to refuse a request it did nothing of (shutting down, a failed log, an
// index still being built), and the mark tells that answer from the
// UNAVAILABLE of a proxy that forwarded the request and lost the node,
// after which a write may have committed. So the client runs a write
// again elsewhere only after the node's own refusal.
func newStatus(code codes.Code, msg string) *status.Status {
	st := status.New(code, msg)
	if code != codes.Unavailable {
		return st
	}
	refused, err := st.WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: pb.ReasonRefused})
	if err != nil {
		return st
	}
	return refused
}

// withLSNReason returns a status error of code with msg and an ErrorInfo
// detail of reason naming the commit at lsn.
func withLSNReason(code codes.Code, reason string, lsn uint64, msg string) error {
	return withReason(code, reason, msg, map[string]string{pb.MetadataLSN: strconv.FormatUint(lsn, 10)})
}

// withReason returns a status error of code with msg and an ErrorInfo
// detail of reason, with metadata md (nil: none).
func withReason(code codes.Code, reason, msg string, md map[string]string) error {
	st, derr := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Domain: pb.ErrorDomain, Reason: reason, Metadata: md})
	if derr != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

// codeError is a request error the server finds itself, with its gRPC
// code. Unlike a status error its text is just the message, so wrapping it
// with context ("operation 2: ...") reads well, and toStatus keeps the code
// (and the REFUSED mark of an UNAVAILABLE, newStatus).
type codeError struct {
	code codes.Code
	msg  string
}

func (e *codeError) Error() string              { return e.msg }
func (e *codeError) GRPCStatus() *status.Status { return newStatus(e.code, e.msg) }

// errorf returns a codeError.
func errorf(code codes.Code, format string, args ...any) error {
	return &codeError{code: code, msg: fmt.Sprintf(format, args...)}
}
