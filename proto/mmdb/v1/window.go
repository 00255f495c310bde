package mmdbv1

// Flow-control windows for mmdb's gRPC connections, the same at both
// ends. gRPC otherwise estimates the window from pings: every burst of
// replies drew a ping and its ack (a read and a write for the node), and
// fsync-log, whose replies leave in a burst after each sync, lost about a
// tenth of its throughput to them. Fixed windows this size cover a LAN's
// or loopback's bandwidth-delay product.
const (
	WindowBytes     = 1 << 20  // per stream
	ConnWindowBytes = 16 << 20 // per connection
)
