package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/internal/pbmem"
	"github.com/mmdb/mmdb/logging/vfs"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// adminService implements AdminService.
type adminService struct {
	pb.UnimplementedAdminServiceServer
	s *Server
}

// Status reports the node. Without a log (no-log) nothing is durable, so
// the durable LSN is zero; without images so is the checkpoint LSN.
func (a *adminService) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := a.s
	last := s.db.LastLSN()
	sc := s.syncNow()
	resp := &pb.StatusResponse{
		Node:             s.cfg.Node,
		Role:             s.Role(),
		Epoch:            s.epochs.Current(),
		Durability:       s.cfg.Durability,
		SyncMode:         sc.Mode,
		SyncQuorum:       uint32(sc.Quorum),
		SyncStandbys:     sc.Standbys,
		SyncTimeout:      durationpb.New(sc.Timeout),
		OnSyncTimeout:    sc.OnTimeout,
		LastLsn:          last,
		DurableLsn:       s.store.DurableLSN(),
		AppliedLsn:       last,
		Uptime:           durationpb.New(time.Since(s.start)),
		Version:          version(),
		OpenTransactions: uint32(s.txs.open()),
		CheckpointLsn:    s.checkpointLSN(),
		Standbys:         []*pb.StandbyStatus{},
	}
	if name, addr, _ := s.store.Standby(); addr != "" {
		resp.Primary = name + " at " + addr
	}
	if err := s.store.Refusing(); err != nil {
		resp.WritesRefused = err.Error()
	}
	standbys, degraded := s.replication()
	resp.Degraded = degraded
	for _, sb := range standbys {
		resp.Standbys = append(resp.Standbys, &pb.StandbyStatus{
			Name: sb.Name, Addr: sb.Addr, State: sb.State, Reason: sb.Reason, ReceivedLsn: sb.Received, AppliedLsn: sb.Applied,
			LagRecords: sb.LagRecords, LagBytes: sb.LagBytes, LagMs: uint64(sb.Lag.Milliseconds()), Via: sb.Via, OutsideQuorum: sb.OutsideQuorum,
		})
	}
	for _, st := range s.db.Stats() {
		resp.Tables = append(resp.Tables, pbmem.TableStatus(st))
	}
	return resp, nil
}

// Checkpoint writes a checkpoint image now.
func (a *adminService) Checkpoint(ctx context.Context, _ *pb.CheckpointRequest) (*pb.CheckpointResponse, error) {
	c := a.s.ckpt
	if c == nil {
		return nil, status.Error(codes.FailedPrecondition, "this node has no data_dir (a diskless node), so it keeps no checkpoint images")
	}
	res, err := c.Run(ctx)
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return nil, status.FromContextError(ctx.Err()).Err()
		case errors.Is(err, checkpoint.ErrFrozen):
			// Not a failure: the node is to restart, to cut its log or
			// load an image, and no image may hold what it sets aside.
			return nil, status.Errorf(codes.FailedPrecondition, "no checkpoint: this node is to restart, to cut its log where it diverged from its primary's or to load an image; checkpoints run again once it has (or once it is promoted): %v", err)
		}
		a.s.log.Error("checkpoint failed", "error", err)
		if vfs.NoSpace(err) {
			return nil, status.Errorf(codes.ResourceExhausted, "checkpoint failed: the disk is full: %v", err)
		}
		return nil, status.Errorf(codes.Internal, "checkpoint failed: %v", err)
	}
	return &pb.CheckpointResponse{
		Lsn: res.Image.LSN, File: res.Image.Path, Bytes: uint64(res.Image.Bytes), Rows: res.Image.Rows,
		Duration: durationpb.New(res.Duration), Skipped: res.Skipped, ReleasedSegments: uint32(res.Released.Segments),
	}, nil
}

// checkpointLSN returns the newest image's LSN; zero without images.
func (s *Server) checkpointLSN() uint64 {
	if s.ckpt == nil {
		return 0
	}
	return s.ckpt.LSN()
}
