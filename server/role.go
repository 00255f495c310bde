package server

import (
	"context"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/conf"
	redolog "github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

// Role returns the node's role now: the configured one, until a
// promotion, a demotion or a step-down changes it.
func (s *Server) Role() string {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	return s.role
}

// SetRole makes the node a primary, a standby or a propagator (SIGHUP
// after the config file's role changed).
func (s *Server) SetRole(role string) error {
	switch role {
	case conf.RolePrimary:
		_, _, _, err := s.promote()
		return err
	case conf.RoleStandby, conf.RolePropagator:
		_, err := s.demote(role, "asked to")
		return err
	}
	return fmt.Errorf("server: role %q cannot be taken while running (primary, standby or propagator)", role)
}

// promote makes a standby the primary: it ends the link it follows once
// what that received is applied, starts a new epoch at its next LSN
// (kept before any write of the epoch), takes commits and ships to its
// peers. already says it was the primary. A promotion that fails leaves
// the node as it was, a standby at its epoch: what can fail comes before
// the new epoch is kept.
func (s *Server) promote() (epoch, start uint64, already bool, err error) {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	if s.role == conf.RolePrimary {
		return s.epochs.Current(), 0, true, nil
	}
	select {
	case <-s.quit:
		return 0, 0, false, errorf(codes.Unavailable, "promote: the node is shutting down")
	default:
	}
	if err := s.promotable(); err != nil {
		return 0, 0, false, err
	}
	// Made now, started once the new epoch is kept, before the first
	// commit of the epoch, so every commit that waits for standbys has a
	// Sender to wait on.
	snd, err := s.primarySender()
	if err != nil {
		return 0, 0, false, fmt.Errorf("server: promote: %w", err)
	}
	if snd != nil {
		defer func() {
			if err != nil {
				snd.Close()
			}
		}()
	}
	s.recv.Stop()
	defer s.recv.Resume() // as a primary it follows no one, but steps down for a newer epoch
	// A link that found the log diverged just before the Receiver stopped
	// has set the tail aside now (Stop waits for it), and marked the node
	// for a restart; none can from here on.
	if err := s.promotable(); err != nil {
		return 0, 0, false, err
	}
	if relay := s.swapSender(&s.relay, nil); relay != nil {
		relay.Close() // a propagator's
	}
	s.relayed = ""
	settle, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.store.Settle(settle); err != nil {
		return 0, 0, false, fmt.Errorf("server: promote: %w", err)
	}
	start = s.db.LastLSN() + 1
	if epoch, err = s.epochs.Promote(start); err != nil {
		return 0, 0, false, fmt.Errorf("server: promote: %w", err)
	}
	s.store.SetEpoch(epoch)
	s.role = conf.RolePrimary
	if snd != nil {
		s.install(&s.sender, snd)
	}
	s.store.Lead()
	// Checkpoints frozen for a cut or a reload that never got under way
	// (its marker could not be written): as the primary, the node's log
	// is its history now, cut by nothing.
	if s.ckpt != nil && s.ckpt.Thaw() {
		s.log.Warn("checkpoints, stopped for a log cut or a reload that did not happen, run again")
	}
	s.log.Info("promoted: this node is the primary", "epoch", epoch, "start-lsn", start)
	return epoch, start, false, nil
}

// keepEpoch begins the stretch of the epoch history that the primary's
// start had no room to keep (a full disk), trying every RetryFull, as the
// log does for its segments; once the stretch is kept the node takes
// writes. It stops when the node shuts down or is no longer a held
// primary (a demotion; a promotion after it keeps an epoch of its own).
func (s *Server) keepEpoch() {
	defer s.keeping.Done()
	t := time.NewTicker(redolog.RetryFull)
	defer t.Stop()
	failed := "" // the last error other than a full disk, logged once
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		done, err := s.tryKeepEpoch()
		if done {
			return
		}
		if err != nil && !vfs.NoSpace(err) && err.Error() != failed {
			failed = err.Error()
			s.log.Error("cannot keep the epoch history: writes are still refused", "error", err)
		}
	}
}

// tryKeepEpoch is one try of keepEpoch: done once the node is no longer a
// held primary.
func (s *Server) tryKeepEpoch() (done bool, err error) {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	if s.role != conf.RolePrimary || s.store.Writable() == nil {
		return true, nil
	}
	epoch, err := s.epochs.Restart(s.db.LastLSN() + 1)
	if err != nil {
		return false, err
	}
	s.store.SetEpoch(epoch)
	s.store.Lead()
	s.log.Info("the epoch history is kept: writes are taken", "epoch", epoch)
	return true, nil
}

// promotable refuses a promotion while the node restarts to cut its log
// or load an image, or sets a diverged tail aside before it does
// (diverged).
func (s *Server) promotable() error {
	s.markMu.Lock()
	defer s.markMu.Unlock()
	if s.restarting || s.aside != 0 {
		return errorf(codes.FailedPrecondition, "promote: the node is restarting, or setting aside the diverged tail of its log before it restarts, to cut its log or load an image; promote it once it is back")
	}
	return nil
}

// demote makes a primary a standby or a propagator (role; empty: the
// one it had last, see standbyRole), or switches between those two: a
// primary stops shipping (commits waiting for standbys return
// unconfirmed) and refuses commits until a primary ships to it; a
// propagator relays what it follows to its peers. already says it had
// the role.
func (s *Server) demote(role, why string) (already bool, err error) {
	s.roleMu.Lock()
	defer s.roleMu.Unlock()
	if role == "" {
		if s.role != conf.RolePrimary {
			return true, nil
		}
		role = s.standbyRole
	}
	if s.role == role {
		return true, nil
	}
	if s.role == conf.RolePrimary {
		s.store.SetPrimary("", "")
		s.markMu.Lock()
		s.led = s.epochs.Last()
		s.markMu.Unlock()
	}
	s.role, s.standbyRole = role, role
	if snd := s.swapSender(&s.sender, nil); snd != nil {
		snd.Close()
	}
	if relay := s.swapSender(&s.relay, nil); relay != nil {
		relay.Close()
	}
	s.relayed = ""
	if err := s.startRelay(); err != nil {
		return false, err
	}
	s.log.Warn("demoted: this node is a "+role, "why", why, "epoch", s.epochs.Current())
	return false, nil
}

// stepDown demotes a primary that learnt of a newer epoch (or of a
// primary at its own epoch with a higher incarnation), and notes the
// epoch so that a later promotion here goes past it.
func (s *Server) stepDown(epoch uint64, peer string) error {
	if err := s.epochs.Observe(epoch); err != nil {
		return fmt.Errorf("server: step down: %w", err)
	}
	_, err := s.demote("", fmt.Sprintf("%s is a primary at epoch %d and wins over this node", peer, epoch))
	return err
}

// Promote makes the node the primary.
func (a *adminService) Promote(context.Context, *pb.PromoteRequest) (*pb.PromoteResponse, error) {
	epoch, start, already, err := a.s.promote()
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.PromoteResponse{Epoch: epoch, StartLsn: start, Already: already}, nil
}

// Demote makes a primary a standby (or a propagator, as configured or
// last set); another node is left as it is.
func (a *adminService) Demote(context.Context, *pb.DemoteRequest) (*pb.DemoteResponse, error) {
	already, err := a.s.demote("", "asked to")
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.DemoteResponse{Epoch: a.s.epochs.Current(), Already: already}, nil
}

// startSender starts shipping the log to the peers, on a primary that
// has them and serves; the caller holds roleMu.
func (s *Server) startSender() error {
	if s.role != conf.RolePrimary {
		return nil
	}
	snd, err := s.primarySender()
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if snd != nil {
		s.install(&s.sender, snd)
	}
	return nil
}

// primarySender makes the Sender a primary ships its log to its peers
// with, not started (install starts it), or nil on a node without peers
// or not serving yet; the caller holds roleMu.
func (s *Server) primarySender() (*replica.Sender, error) {
	if len(s.sec.peers()) == 0 || s.addr == "" {
		return nil, nil
	}
	sc := s.syncNow()
	mode, err := replica.ParseMode(sc.Mode)
	if err != nil {
		return nil, err
	}
	opts := replica.SenderOptions{
		Node: s.cfg.Node, Addr: s.addr, Epochs: s.epochs, Mode: mode, Quorum: int(sc.Quorum), Counted: sc.Standbys, Timeout: sc.Timeout,
		Block: sc.OnTimeout == "block", MaxMessageBytes: int(s.cfg.MaxMessageBytes), Logger: s.log.Named("replica"),
		OnNewerEpoch: func(epoch uint64, standby string) {
			if err := s.stepDown(epoch, standby); err != nil {
				s.log.Error("could not step down", "error", err)
			}
		},
		Peers: s.peers(),
	}
	return s.makeSender(opts)
}

// peers returns the node's peers.
func (s *Server) peers() []replica.Peer {
	var out []replica.Peer
	for _, p := range s.sec.peers() {
		out = append(out, replica.Peer{Name: p.Name, Addr: p.Addr})
	}
	return out
}

// downstream returns the standbys a propagator ships to, for its
// acknowledgements upstream.
func (s *Server) downstream() []*pb.StandbyAck {
	if relay := s.relaying(); relay != nil {
		return relay.Downstream()
	}
	return nil
}

// newSender is replica.NewSender; tests make it fail.
var newSender = replica.NewSender

// makeSender makes a Sender with opts, dialing as the node does, not
// started yet (install starts it).
func (s *Server) makeSender(opts replica.SenderOptions) (*replica.Sender, error) {
	opts.Dial = func(addr string) (*grpc.ClientConn, error) { return replica.Dial(addr, s.sec.dial(addr)) }
	snd, err := newSender(s.store, opts)
	if err != nil {
		return nil, fmt.Errorf("make the sender of the log: %w", err)
	}
	return snd, nil
}

// install starts snd as the primary's or the propagator's Sender
// (which), unless the node shuts down; the caller holds roleMu.
func (s *Server) install(which **replica.Sender, snd *replica.Sender) {
	select {
	case <-s.quit:
		snd.Close() // shut down before it served
	default:
		snd.Start()
		s.swapSender(which, snd)
	}
}

// followed is called when the node follows a sender: a propagator starts
// relaying its log, or starts again if the upstream changed.
func (s *Server) followed() {
	s.follows.Add(1)
	go func() {
		defer s.follows.Done()
		s.roleMu.Lock()
		defer s.roleMu.Unlock()
		if err := s.startRelay(); err != nil {
			s.log.Error("could not relay the log", "error", err)
		}
	}()
}

// startRelay starts shipping, on a serving propagator, the log of the
// primary it follows to its peers (but the one it follows), unless it
// already does from the same upstream and epoch history; the caller
// holds roleMu.
func (s *Server) startRelay() error {
	up, ok := s.recv.Upstream()
	if s.role != conf.RolePropagator || !ok || s.addr == "" {
		return nil
	}
	key := fmt.Sprintf("from %s, primary %s at %s, via %q, history %v", up.Upstream, up.Primary.Name, up.Primary.Addr, up.Via, s.epochs.History())
	if key == s.relayed {
		return nil
	}
	if old := s.swapSender(&s.relay, nil); old != nil {
		old.Close()
	}
	s.relayed = ""
	opts := replica.SenderOptions{
		Node: s.cfg.Node, Addr: s.addr, Epochs: s.epochs, Mode: replica.Async, Relay: &up, OnAck: s.recv.Poke,
		MaxMessageBytes: int(s.cfg.MaxMessageBytes), Logger: s.log.Named("relay"), Peers: s.peers(),
	}
	snd, err := s.makeSender(opts)
	if err != nil {
		return fmt.Errorf("server: relay: %w", err)
	}
	s.install(&s.relay, snd)
	s.relayed = key
	s.log.Info("relaying the log", "primary", up.Primary.Name, "from", up.Upstream, "via", up.Via)
	return nil
}

// swapSender sets a Sender (&s.sender or &s.relay) and returns the one
// it replaces.
func (s *Server) swapSender(which **replica.Sender, snd *replica.Sender) *replica.Sender {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	old := *which
	*which = snd
	return old
}

// relaying returns the propagator's Sender, if it relays.
func (s *Server) relaying() *replica.Sender {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	return s.relay
}

// replication returns the standbys the node ships to, as the primary or
// as a propagator that relays, and whether the primary's commits are
// degraded (go on without them).
func (s *Server) replication() (standbys []replica.Standby, degraded bool) {
	if snd := s.shipper(); snd != nil {
		return snd.Standbys(), snd.Degraded()
	}
	if relay := s.relaying(); relay != nil {
		return relay.Standbys(), false
	}
	return nil, false
}

// syncConf is what the node's commits wait for: its sync_mode,
// sync_quorum, sync_standbys, sync_timeout and on_sync_timeout, from the
// configuration at start, then as SetSync changes them.
type syncConf struct {
	Mode      string
	Quorum    int64
	Standbys  []string
	Timeout   time.Duration
	OnTimeout string
}

func syncConfOf(cfg *conf.Config) *syncConf {
	return &syncConf{cfg.SyncMode, cfg.SyncQuorum, slices.Clone(cfg.SyncStandbys), cfg.SyncTimeout, cfg.OnSyncTimeout}
}

// syncNow returns the node's sync settings.
func (s *Server) syncNow() *syncConf { return s.syncConf.Load() }

// SetSync takes the sync settings of cfg, a configuration read again
// (SIGHUP): the commits and reads that wait now, and those from now on,
// wait as they say, and so does a sender a later promotion starts. cfg's
// other settings are not taken. It says which settings changed (none:
// nil).
func (s *Server) SetSync(cfg *conf.Config) ([]string, error) {
	next := syncConfOf(cfg)
	mode, err := replica.ParseMode(next.Mode)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	s.roleMu.Lock() // a promotion starts its sender with the settings of its time
	defer s.roleMu.Unlock()
	was := s.syncNow()
	var changed []string
	for _, c := range []struct {
		key  string
		same bool
	}{
		{"sync_mode", was.Mode == next.Mode}, {"sync_quorum", was.Quorum == next.Quorum},
		{"sync_standbys", slices.Equal(was.Standbys, next.Standbys)}, {"sync_timeout", was.Timeout == next.Timeout},
		{"on_sync_timeout", was.OnTimeout == next.OnTimeout},
	} {
		if !c.same {
			changed = append(changed, c.key)
		}
	}
	if changed == nil {
		return nil, nil
	}
	// conf.Validate checked the file against its own peers (for every
	// role, as at start); the running ones must do.
	if mode != replica.Async && next.Quorum > 0 && len(s.sec.peers()) == 0 {
		return nil, fmt.Errorf("server: sync_mode %s with sync_quorum %d needs peers, and node %s runs with none", next.Mode, next.Quorum, s.cfg.Node)
	}
	s.syncConf.Store(next)
	if snd := s.shipper(); snd != nil {
		snd.SetSync(mode, int(next.Quorum), next.Standbys, next.Timeout, next.OnTimeout == "block")
	}
	if slices.Contains(changed, "sync_standbys") {
		s.warnNoPeers(next)
	}
	return changed, nil
}

// SetPeers takes the peers of cfg, a configuration read again (SIGHUP):
// a primary ships to them, a propagator relays to them, and a standby
// takes log from them and from no other node; each may call it as a
// peer. Links to peers gone end; a primary left without peers stops
// shipping, as one started without them never does, and its commits wait
// for no standby. A node with a log that started without peers keeps its
// records in memory from its first peer on (durability.Store.KeepRing):
// a standby catches up on those before from the log's files.
// It says which peers it began and stopped shipping to. With changed
// true, err says only that shipping to the new peers could not start.
func (s *Server) SetPeers(cfg *conf.Config) (changed bool, added, removed []string, err error) {
	s.roleMu.Lock() // a promotion or a relay starts its sender with the peers of its time
	defer s.roleMu.Unlock()
	if slices.Equal(s.sec.peers(), cfg.Peers) {
		return false, nil, nil, nil
	}
	if len(cfg.Peers) > 0 {
		s.store.KeepRing(shipRing(s.cfg))
	}
	s.sec.setPeers(cfg.Peers)
	var names []string
	for _, p := range cfg.Peers {
		names = append(names, p.Name)
	}
	s.recv.SetPeers(names)
	for _, snd := range []*replica.Sender{s.shipper(), s.relaying()} {
		if snd != nil {
			a, r := snd.SetPeers(s.peers())
			added, removed = append(added, a...), append(removed, r...)
		}
	}
	if sc := s.syncNow(); slices.Equal(sc.Standbys, cfg.SyncStandbys) {
		s.warnNoPeers(sc) // SetSync warns when it takes the file's other list
	}
	switch {
	case len(cfg.Peers) == 0:
		if snd := s.swapSender(&s.sender, nil); snd != nil {
			snd.Close()
		}
	case s.shipper() == nil:
		if err := s.startSender(); err != nil {
			return true, added, removed, err
		}
		if s.shipper() != nil {
			for _, p := range cfg.Peers {
				added = append(added, p.Name)
			}
		}
	}
	return true, added, removed, nil
}

// warnNoPeers warns of each name in sync_standbys that is none of the
// node's peers: a typo, or a standby behind a propagator.
func (s *Server) warnNoPeers(sc *syncConf) {
	for _, name := range sc.Standbys {
		if !slices.ContainsFunc(s.sec.peers(), func(p conf.Peer) bool { return p.Name == name }) {
			s.log.Warn("sync_standbys names a node that is no peer: it counts only when a propagator reports it", "standby", name)
		}
	}
}

// shipper returns the Sender, if the node ships its log.
func (s *Server) shipper() *replica.Sender {
	s.syncMu.Lock()
	defer s.syncMu.Unlock()
	return s.sender
}

// waitSync waits until the commit at lsn has the standbys' answers its
// sync mode asks for (negative: the node's sync_mode) (replica.Sender.Wait);
// degraded says it did not wait for them.
func (s *Server) waitSync(ctx context.Context, lsn uint64, mode replica.Mode) (degraded bool, err error) {
	snd := s.shipper()
	if snd == nil {
		if s.waitsForNone(mode) {
			return false, nil
		}
		return false, fmt.Errorf("%w: LSN %d: this node does not ship its log now (it stepped down)", replica.ErrUnconfirmed, lsn)
	}
	return snd.Wait(ctx, lsn, mode)
}

// syncHolds reports whether the commit at lsn has nothing to wait for
// from standbys, so that waitSync would return nil at once: its sync
// mode is async, or the standbys hold lsn already (replica.Sender.Holds),
// or the node ships no log and its commits wait for none.
func (s *Server) syncHolds(lsn uint64, mode replica.Mode) bool {
	if snd := s.shipper(); snd != nil {
		return snd.Holds(lsn, mode)
	}
	return s.waitsForNone(mode)
}

// waitsForNone says whether a commit of sync mode mode (negative: the
// node's) waits for no standby on a node that ships no log: its mode is
// async, or the node could not wait for standbys (canSync).
func (s *Server) waitsForNone(mode replica.Mode) bool {
	return mode < 0 && s.syncNow().Mode == conf.SyncAsync || mode == replica.Async || s.canSync() != nil
}

// waitRead returns once the standbys hold every commit up to seen, the
// newest a read that has just finished saw, as the node's sync_mode asks
// for commits: on a primary that waits for its standbys, a read must not
// show a commit that a failover could lose, or the new primary would take
// back what a client has seen. It does not wait while the node is
// degraded, nor for async or on a standby. A wait gives up a margin
// before ctx's deadline (replyBefore), so that the read's error reaches
// the client.
func (s *Server) waitRead(ctx context.Context, seen uint64) error {
	snd := s.shipper()
	if snd == nil || s.syncNow().Mode == conf.SyncAsync || snd.Holds(seen, -1) {
		return nil // nothing to wait for, and no deadline to bring forward (replyBefore costs allocations)
	}
	ctx, cancel := replyBefore(ctx)
	defer cancel()
	_, err := snd.Wait(ctx, seen, -1)
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return status.Errorf(status.FromContextError(ctx.Err()).Code(), "a read waited for the standbys to hold what it saw, and they did not before its deadline: %v", err)
	}
	return errorf(codes.Unavailable, "a read waited for the standbys to hold what it saw: %v", err)
}

// canSync says why a commit cannot wait for standbys, if it cannot.
func (s *Server) canSync() error {
	switch {
	case len(s.sec.peers()) == 0:
		return fmt.Errorf("node %s has no peers to wait for", s.cfg.Node)
	case s.syncNow().Quorum == 0:
		return fmt.Errorf("node %s has sync_quorum 0", s.cfg.Node)
	}
	return nil
}
