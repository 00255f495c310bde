package mem

import (
	"errors"
	"fmt"
)

// Errors returned by the engine. They are always wrapped with details (the
// table, column, index or limit involved); test for them with errors.Is.
// The server maps them to gRPC codes (SPEC section 11) as noted.
var (
	ErrNoTable    = errors.New("mem: no such table")                // NOT_FOUND
	ErrNoColumn   = errors.New("mem: no such column")               // INVALID_ARGUMENT
	ErrNoIndex    = errors.New("mem: no such index")                // NOT_FOUND
	ErrTableExist = errors.New("mem: table already exists")         // ALREADY_EXISTS
	ErrIndexExist = errors.New("mem: index already exists")         // ALREADY_EXISTS
	ErrType       = errors.New("mem: wrong type")                   // INVALID_ARGUMENT
	ErrNull       = errors.New("mem: NULL in a NOT NULL column")    // INVALID_ARGUMENT
	ErrTooLong    = errors.New("mem: value too long")               // INVALID_ARGUMENT
	ErrInvalid    = errors.New("mem: invalid argument")             // INVALID_ARGUMENT: a request or definition that breaks a rule of its own
	ErrDuplicate  = errors.New("mem: duplicate key")                // ALREADY_EXISTS
	ErrNotUnique  = errors.New("mem: rows share a key")             // FAILED_PRECONDITION: the table's rows prevent a unique index
	ErrNotFound   = errors.New("mem: row not found")                // NOT_FOUND
	ErrConflict   = errors.New("mem: serialization conflict")       // ABORTED: retry the transaction
	ErrTxDone     = errors.New("mem: transaction already finished") // FAILED_PRECONDITION
	ErrCorrupt    = errors.New("mem: corrupt record")               // bytes from disk or network that do not decode
	ErrLimit      = errors.New("mem: limit exceeded")               // RESOURCE_EXHAUSTED: past a fixed limit of the engine (MaxColumns, MaxRowSize, ...)
	ErrBuilding   = errors.New("mem: index being built")            // UNAVAILABLE: an index Apply added is not built yet (DB.Building); retry
)

// seenError is a failed Commit's error that shows the effect of the
// commit at lsn: a row that holds a unique key, a table dropped.
type seenError struct {
	err error
	lsn uint64
}

func (e *seenError) Error() string { return e.err.Error() }
func (e *seenError) Unwrap() error { return e.err }

// SeenLSN returns the LSN of the newest commit whose effect err, a
// failed Commit's (or CreateIndex's) error, shows (as Tx.Seen does for
// what a transaction read before it committed); zero when it shows none.
func SeenLSN(err error) uint64 {
	var se *seenError
	if errors.As(err, &se) {
		return se.lsn
	}
	return 0
}

func errorf(base error, format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{base}, args...)...)
}
