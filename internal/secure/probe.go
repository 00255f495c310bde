package secure

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"time"
)

// ServesTLS reports whether the node at addr answers a TLS handshake
// (false when it cannot be reached). gRPC reports a plaintext call to
// such a node as Unavailable, "error reading server preface", which an
// image fetch would retry for a minute. A client that dials in plaintext
// asks this, so that it can say what is wrong at once.
func ServesTLS(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: probeTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	// A probe: nothing is sent over the connection, so an error closing
	// it changes nothing.
	defer func() { _ = conn.Close() }()
	if conn.SetDeadline(time.Now().Add(probeTimeout)) != nil {
		return false
	}
	// Only whether the node speaks TLS matters here, not who it is: its
	// certificate is not checked. A node that wants a client certificate
	// may answer with an alert (under TLS 1.2; under 1.3 the handshake
	// ends first), which is TLS too.
	err = tls.Client(conn, &tls.Config{InsecureSkipVerify: true}).HandshakeContext(ctx)
	var alert *net.OpError
	return err == nil || errors.As(err, &alert) && alert.Op == "remote error"
}

// probeTimeout bounds ServesTLS.
const probeTimeout = 2 * time.Second
