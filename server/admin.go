package server

import (
	"context"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/mmdb/mmdb/internal/pbmem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// adminService implements AdminService.
type adminService struct {
	pb.UnimplementedAdminServiceServer
	s *Server
}

// Status reports the node. Without a log (no-log) nothing is durable, so
// the durable LSN is zero; without checkpoints so is the checkpoint LSN.
func (a *adminService) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := a.s
	last := s.db.LastLSN()
	resp := &pb.StatusResponse{
		Node:             s.cfg.Node,
		Role:             s.cfg.Role,
		Durability:       s.cfg.Durability,
		SyncMode:         s.cfg.SyncMode,
		LastLsn:          last,
		DurableLsn:       s.store.DurableLSN(),
		AppliedLsn:       last,
		Uptime:           durationpb.New(time.Since(s.start)),
		Version:          version(),
		OpenTransactions: uint32(s.txs.open()),
		Standbys:         []*pb.StandbyStatus{},
	}
	for _, st := range s.db.Stats() {
		resp.Tables = append(resp.Tables, pbmem.TableStatus(st))
	}
	return resp, nil
}
