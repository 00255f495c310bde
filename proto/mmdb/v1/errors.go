package mmdbv1

// A node that cannot take a write in its role (a standby) answers
// FAILED_PRECONDITION with a google.rpc.ErrorInfo detail of domain
// ErrorDomain and reason ReasonNotPrimary, whose metadata names the
// primary's address under MetadataPrimary (empty when it knows none).
// Clients follow it.
//
// A write whose redo record is over the log's limit is refused with
// RESOURCE_EXHAUSTED and an ErrorInfo of reason ReasonTooLarge: smaller
// writes would go in (unlike a full disk's RESOURCE_EXHAUSTED). So is
// a TableDigest whose listed rows would pass max_message_bytes: fewer
// buckets a call would go in.
//
// A full disk refuses a write with RESOURCE_EXHAUSTED, and it changes
// nothing. But a commit made in memory whose redo record the full disk
// then keeps out of the log gets RESOURCE_EXHAUSTED with an ErrorInfo of
// reason ReasonNotDurable, its LSN under MetadataLSN: it is not
// acknowledged, it becomes durable if space is freed before the node
// stops, and it is lost if the node stops first. Running it again could
// apply it twice. A commit made in memory whose record the log then
// fails to write (an I/O error: the node takes no more writes) gets
// INTERNAL with the same detail: it is lost when the node stops. Neither
// is UNAVAILABLE, which clients answer by sending the write elsewhere.
//
// A commit made here whose durability level or standbys (its sync mode)
// did not confirm it before the reply had to go (a deadline, a cancel,
// a node that stopped shipping its log) gets DEADLINE_EXCEEDED, CANCELED
// or FAILED_PRECONDITION with reason ReasonUnconfirmed, its LSN under
// MetadataLSN: it may stand, so it must not be run again blindly.
//
// A read (or a request that failed on what it read) that saw such a
// commit gets RESOURCE_EXHAUSTED with reason ReasonSeenNotDurable, that
// commit's LSN under MetadataLSN: nothing of the request was done, and
// it may be sent again once space is freed.
//
// A node answers UNAVAILABLE only to refuse a request before it did
// anything of it (it is shutting down, its log failed, a standby's index
// is still being built), and such an answer carries an ErrorInfo of
// reason ReasonRefused. An UNAVAILABLE without it was not the node's: a
// proxy or load balancer between the client and the node made it (it
// may have forwarded the request, and then lost the node), or the
// client's own connection failed. A write that left the client and got
// one may have committed, so it must not be run again blindly.
//
// A Scan page whose after_table_id names a table that no longer holds
// its name (dropped, perhaps created again since: the resume key is of
// the old one) gets FAILED_PRECONDITION with reason ReasonTableRecreated:
// sending it again fails alike, so the client starts the scan anew.
//
// A standby's answer to a read carries the header HeaderPrimary naming
// its primary's address, when it knows it: a client that read from the
// standby while the primary was out of reach goes back to it.
//
// A unary Begin may carry the header HeaderBeginKey once, a random value
// of 1 to MaxBeginKeyBytes the client picks for it (a longer one is
// RESOURCE_EXHAUSTED, a limit; one sent twice or empty INVALID_ARGUMENT).
// When the client lost the reply (its connection failed after the
// request left) and sends the Begin again with the same key, the node
// answers with the transaction the first one opened, if it is still
// open, instead of opening another: the first would otherwise hold a
// slot of max_open_transactions, with nobody to roll it back, until
// tx_idle_timeout. A Session's Begin ignores it (its transactions end
// with the stream).
const (
	ErrorDomain          = "mmdb.v1"
	ReasonNotPrimary     = "NOT_PRIMARY"
	ReasonTooLarge       = "TOO_LARGE"
	ReasonNotDurable     = "NOT_DURABLE"
	ReasonSeenNotDurable = "SEEN_NOT_DURABLE"
	ReasonUnconfirmed    = "UNCONFIRMED"
	ReasonRefused        = "REFUSED"
	ReasonTableRecreated = "TABLE_RECREATED"
	MetadataPrimary      = "primary"
	MetadataLSN          = "lsn"
	HeaderPrimary        = "mmdb-primary"
	HeaderBeginKey       = "mmdb-begin-key"
	MaxBeginKeyBytes     = 64
)
