package mmdbv1

// A node that cannot take a write in its role (a standby) answers
// FAILED_PRECONDITION with a google.rpc.ErrorInfo detail of domain
// ErrorDomain and reason ReasonNotPrimary, whose metadata names the
// primary's address under MetadataPrimary (empty when it knows none).
// Clients follow it.
const (
	ErrorDomain      = "mmdb.v1"
	ReasonNotPrimary = "NOT_PRIMARY"
	MetadataPrimary  = "primary"
)
