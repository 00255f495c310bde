package mmdbv1

// A node that cannot take a write in its role (a standby) answers
// FAILED_PRECONDITION with a google.rpc.ErrorInfo detail of domain
// ErrorDomain and reason ReasonNotPrimary, whose metadata names the
// primary's address under MetadataPrimary (empty when it knows none).
// Clients follow it.
//
// A write whose redo record is over the log's limit is refused with
// RESOURCE_EXHAUSTED and an ErrorInfo of reason ReasonTooLarge: smaller
// writes would go in (unlike a full disk's RESOURCE_EXHAUSTED).
const (
	ErrorDomain      = "mmdb.v1"
	ReasonNotPrimary = "NOT_PRIMARY"
	ReasonTooLarge   = "TOO_LARGE"
	MetadataPrimary  = "primary"
)
