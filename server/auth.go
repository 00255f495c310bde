package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/internal/secure"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// security is what a node requires of whoever calls it, and how it
// dials other nodes: its tls block and auth_token_file (SPEC section 9).
//
// With tls.ca_file set, callers are checked by the certificate they
// present (verified against the CA in the handshake) and the names it
// carries: only a peer may ship log to the node (ReplicationService);
// the node itself, a peer or a tls.admin_names name may run admin RPCs
// and fetch images (AdminService, ImageService); with auth_token_file,
// other calls need a client's bearer token or one of those
// certificates. A stream's caller is checked again once the tokens or
// the peers change. The health service stays open to all. Without
// tls.ca_file nobody is checked (TLS, if set, only encrypts).
type security struct {
	kp      *secure.KeyPair // the node's certificate; nil without TLS
	ca      *secure.CA      // verifies callers and the nodes dialled; nil without tls.ca_file
	tokens  *secure.Tokens  // the clients' tokens; nil without auth_token_file
	node    string          // the node's name
	admin   []string        // tls.admin_names
	peering atomic.Pointer[peering]
	// gen counts the changes of the tokens and the peers (SIGHUP): a
	// stream checks its caller again once it moved (checkedStream).
	gen atomic.Uint64
}

// peering is who the node's peers are: those configured at start, then
// as setPeers changes them.
type peering struct {
	list   []conf.Peer
	peers  map[string]bool // names that may ship log here
	admins map[string]bool // names that may run admin RPCs and fetch images
}

// newSecurity reads the certificate, CA and token files the
// configuration names.
func newSecurity(cfg *conf.Config) (*security, error) {
	sec := &security{node: cfg.Node, admin: slices.Clone(cfg.TLSAdminNames)}
	sec.setPeers(cfg.Peers)
	var err error
	if cfg.TLSCertFile != "" {
		if sec.kp, err = secure.LoadKeyPair(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			return nil, fmt.Errorf("server: %s: %w", cfg.Origin("tls_cert_file"), err)
		}
	}
	if cfg.TLSCAFile != "" {
		if sec.ca, err = secure.LoadCA(cfg.TLSCAFile); err != nil {
			return nil, fmt.Errorf("server: %s: %w", cfg.Origin("tls_ca_file"), err)
		}
	}
	if cfg.AuthTokenFile != "" {
		if sec.tokens, err = secure.LoadTokens(cfg.AuthTokenFile); err != nil {
			return nil, fmt.Errorf("server: %s: %w", cfg.Origin("auth_token_file"), err)
		}
	}
	return sec, nil
}

// setPeers makes list the node's peers.
func (sec *security) setPeers(list []conf.Peer) {
	p := &peering{list: slices.Clone(list), peers: map[string]bool{}, admins: map[string]bool{sec.node: true}}
	for _, peer := range list {
		p.peers[peer.Name] = true
		p.admins[peer.Name] = true
	}
	for _, n := range sec.admin {
		p.admins[n] = true
	}
	sec.peering.Store(p)
	sec.gen.Add(1)
}

// peers returns the node's peers now.
func (sec *security) peers() []conf.Peer { return sec.peering.Load().list }

// ReloadCredentials reads the node's certificate and key, its CA file
// and its token file again (SIGHUP), for the connections and calls from
// now on (the handshakes of connections that connect again: a link to a
// peer), and
// for the messages of the streams open (a token no longer in the file
// ends its streams: checkedStream); what fails to load leaves the old
// in use. The other security keys need a restart.
func (s *Server) ReloadCredentials() error {
	err := s.sec.reload()
	s.warnNoTokens()
	return err
}

// warnNoTokens warns when the token file holds no token, which refuses
// every client (how an operator revokes them all).
func (s *Server) warnNoTokens() {
	if s.sec.tokens != nil && s.sec.tokens.Len() == 0 {
		s.log.Warn("the token file holds no token: every client call is refused; peers and operators still authenticate with their certificates", "file", s.cfg.AuthTokenFile)
	}
}

func (sec *security) reload() error {
	var errs []error
	if sec.kp != nil {
		errs = append(errs, sec.kp.Reload())
	}
	if sec.ca != nil {
		errs = append(errs, sec.ca.Reload())
	}
	if sec.tokens != nil {
		errs = append(errs, sec.tokens.Reload())
		sec.gen.Add(1)
	}
	return errors.Join(errs...)
}

// creds are the transport credentials the node serves with: TLS, or
// none (plaintext).
func (sec *security) creds(requireCert bool) []grpc.ServerOption {
	if sec.kp == nil {
		return nil
	}
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(secure.Server(sec.kp, sec.ca, requireCert)))}
}

// interceptors check each call's caller; none without peer
// authentication.
func (sec *security) interceptors() (grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	if sec.ca == nil {
		return nil, nil
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := sec.check(ctx, info.FullMethod); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}, func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			cs := &checkedStream{ServerStream: ss, sec: sec, method: info.FullMethod}
			cs.seen.Store(sec.gen.Load()) // before the check: a change meanwhile is checked at the first message
			if err := sec.check(ss.Context(), info.FullMethod); err != nil {
				return err
			}
			return h(srv, cs)
		}
}

// checkedStream is a stream whose caller is checked again, at its next
// message in or out, once the tokens or the peers have changed (SIGHUP):
// a token gone from the file, or a peer gone from the list, ends the
// streams it opened, which may last for days (a client's Session), as
// it refuses its new calls.
type checkedStream struct {
	grpc.ServerStream
	sec    *security
	method string
	seen   atomic.Uint64 // sec.gen at the last check that passed
}

func (cs *checkedStream) recheck() error {
	gen := cs.sec.gen.Load()
	if cs.seen.Load() == gen {
		return nil
	}
	if err := cs.sec.check(cs.Context(), cs.method); err != nil {
		st := status.Convert(err)
		return status.Errorf(st.Code(), "%s (checked again: the node's tokens or peers changed while the stream was open)", st.Message())
	}
	cs.seen.Store(gen)
	return nil
}

// RecvMsg checks after the message arrived: one that came after a
// change is not handed on unchecked, however long it was awaited.
func (cs *checkedStream) RecvMsg(m any) error {
	if err := cs.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	return cs.recheck()
}

func (cs *checkedStream) SendMsg(m any) error {
	if err := cs.recheck(); err != nil {
		return err
	}
	return cs.ServerStream.SendMsg(m)
}

// dial is the transport credentials to dial the node at addr with: TLS
// presenting this node's certificate and checking the other's for the
// name of the peer at addr (for the host dialled when addr is no peer's).
func (sec *security) dial(addr string) grpc.DialOption {
	if sec.kp == nil {
		return grpc.WithTransportCredentials(insecure.NewCredentials())
	}
	name, _ := conf.PeerAt(sec.peers(), addr)
	return grpc.WithTransportCredentials(secure.Dial(sec.kp, sec.ca, name))
}

// dialNode is dial for node, the node at addr, an address it gave of
// itself: its certificate is checked for node's name whatever addr is,
// which the peer list may spell otherwise or not hold (a wildcard listen
// address made the host's name). Without a name (node is empty) it is
// dial.
func (sec *security) dialNode(addr, node string) grpc.DialOption {
	if sec.kp == nil || node == "" {
		return sec.dial(addr)
	}
	return grpc.WithTransportCredentials(secure.Dial(sec.kp, sec.ca, node))
}

// shipsAs checks, with peer authentication on, that the certificate of
// a node shipping log names the peer its hello claims to be; nil
// without peer authentication.
func (sec *security) shipsAs() func(ctx context.Context, sender string) error {
	if sec.ca == nil {
		return nil
	}
	return func(ctx context.Context, sender string) error {
		if cert := callerCert(ctx); cert == nil || !slices.Contains(secure.Names(cert), sender) {
			return status.Errorf(codes.PermissionDenied, "replication: the sender says it is %s, but its certificate does not name it", sender)
		}
		return nil
	}
}

// The services whose callers must be nodes or operators.
var (
	replicationPrefix = "/" + pb.ReplicationService_ServiceDesc.ServiceName + "/"
	adminPrefix       = "/" + pb.AdminService_ServiceDesc.ServiceName + "/"
	imagePrefix       = "/" + pb.ImageService_ServiceDesc.ServiceName + "/"
	healthPrefix      = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"
)

// check tells whether the caller of method may call it.
func (sec *security) check(ctx context.Context, method string) error {
	switch {
	case strings.HasPrefix(method, healthPrefix):
		return nil
	case strings.HasPrefix(method, replicationPrefix):
		return sec.certified(ctx, sec.peering.Load().peers, "ship log to this node: only its peers may")
	case strings.HasPrefix(method, adminPrefix), strings.HasPrefix(method, imagePrefix):
		return sec.certified(ctx, sec.peering.Load().admins, "run admin RPCs or fetch images: only the node, its peers and tls.admin_names may")
	case sec.tokens == nil:
		return nil
	}
	// A client: a token, or a certificate that may do more.
	md, _ := metadata.FromIncomingContext(ctx)
	auth := md.Get("authorization")
	if len(auth) == 0 {
		if cert := callerCert(ctx); cert != nil && named(cert, sec.peering.Load().admins) {
			return nil
		}
		return status.Error(codes.Unauthenticated, "this node needs a bearer token (metadata authorization: Bearer <token>)")
	}
	tok, ok := bearer(auth[0])
	if _, known := sec.tokens.Lookup(tok); !ok || !known || len(auth) > 1 {
		return status.Error(codes.Unauthenticated, "the bearer token is not one this node accepts")
	}
	return nil
}

// bearer returns the token of an authorization header of the Bearer
// scheme, and false for another scheme. The scheme is case-insensitive
// and one or more spaces follow it (RFC 7235 section 2.1, RFC 6750
// section 2.1).
func bearer(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	return strings.TrimLeft(tok, " "), true
}

// certified checks that the caller presented a certificate the CA
// verified and that it names one of allowed; what says what a refusal
// refuses.
func (sec *security) certified(ctx context.Context, allowed map[string]bool, what string) error {
	cert := callerCert(ctx)
	switch {
	case cert == nil:
		return status.Errorf(codes.Unauthenticated, "no client certificate signed by this node's CA (tls.ca_file): cannot %s", what)
	case !named(cert, allowed):
		return status.Errorf(codes.PermissionDenied, "the client certificate names %q: cannot %s", secure.Names(cert), what)
	}
	return nil
}

// callerCert is the certificate the caller presented and the handshake
// verified; nil if none.
func callerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	return secure.Verified(p.AuthInfo)
}

// named tells whether one of the certificate's names is among allowed.
func named(cert *x509.Certificate, allowed map[string]bool) bool {
	return slices.ContainsFunc(secure.Names(cert), func(n string) bool { return allowed[n] })
}
