package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/fnv"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/mmdb/mmdb/internal/pbmem"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// maxBucketDigestBytes bounds a BucketDigest in a TableDigestResponse:
// two varints and their tags, and its own tag and length.
const maxBucketDigestBytes = 2*(1+binary.MaxVarintLen64) + 2

// TableDigest summarises a table as of a snapshot (see the proto).
func (a *adminService) TableDigest(ctx context.Context, req *pb.TableDigestRequest) (*pb.TableDigestResponse, error) {
	n := req.GetBuckets()
	if n == 0 || n > pb.MaxDigestBuckets {
		code := codes.InvalidArgument
		if n > 0 {
			code = codes.ResourceExhausted // a limit (SPEC 11)
		}
		return nil, status.Errorf(code, "table %q: buckets %d: from 1 to %d", req.GetTable(), n, pb.MaxDigestBuckets)
	}
	list := map[uint32]bool{}
	for _, b := range req.GetList() {
		if b >= n {
			return nil, status.Errorf(codes.InvalidArgument, "bucket %d of %d", b, n)
		}
		list[b] = true
	}
	if err := a.waitApplied(ctx, req.GetMinLsn()); err != nil {
		return nil, err
	}
	sn := a.s.db.Snapshot()
	defer sn.Close()
	var def mem.TableDef
	for _, d := range sn.Tables() {
		if d.Name == req.GetTable() {
			def = d
		}
	}
	if def.Name == "" {
		return nil, status.Errorf(codes.NotFound, "no table %q", req.GetTable())
	}
	pk := make([]int, len(def.PrimaryKey))
	for i, name := range def.PrimaryKey {
		for c, col := range def.Columns {
			if col.Name == name {
				pk[i] = c
			}
		}
	}
	resp := &pb.TableDigestResponse{Lsn: sn.LSN(), Buckets: make([]*pb.BucketDigest, n)}
	for i := range resp.Buckets {
		resp.Buckets[i] = &pb.BucketDigest{}
	}
	// The listed rows stop short of max_message_bytes, with room for the
	// buckets' digests: a reply past it would be built whole, however
	// large, only for gRPC to refuse to send it.
	room := a.s.dbs.maxMsgBytes - replySlack - int(n)*maxBucketDigestBytes
	key := make([]mem.Value, len(pk))
	err := sn.Scan(def.ID, func(r mem.Record) error {
		for i, c := range pk {
			key[i] = r.Value(c)
		}
		k, err := proto.MarshalOptions{Deterministic: true}.Marshal(&pb.Row{Values: pbmem.Values(key)})
		if err != nil {
			return err
		}
		bucket := crc32.ChecksumIEEE(k) % n
		h := fnv.New64a()
		_, _ = h.Write(r.Encoded()) // a hash.Hash never fails
		sum := h.Sum64()
		d := resp.Buckets[bucket]
		d.Rows++
		d.Sum += sum
		if list[bucket] {
			rd := &pb.RowDigest{Bucket: bucket, Key: k, Hash: sum}
			if room -= rd.SizeVT() + 4; room < 0 {
				return withReason(codes.ResourceExhausted, pb.ReasonTooLarge, fmt.Sprintf("table %q: the rows of the %d buckets listed pass max_message_bytes (%d); list fewer buckets a call, or split the table into more buckets", req.GetTable(), len(list), a.s.dbs.maxMsgBytes), nil)
			}
			resp.Rows = append(resp.Rows, rd)
		}
		return ctx.Err()
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return resp, nil
}

// waitApplied waits until the node has applied the commit at lsn, giving
// up a margin before ctx's deadline (replyBefore), so that the client
// learns how far the node got rather than only that its deadline passed.
func (a *adminService) waitApplied(ctx context.Context, lsn uint64) error {
	ctx, cancel := replyBefore(ctx)
	defer cancel()
	if err := a.s.store.WaitApplied(ctx, lsn); err != nil {
		// The call ended (its deadline, or the caller canceled), or the
		// node cannot apply past what it holds (its store is broken).
		code := codes.FailedPrecondition
		if ctx.Err() != nil {
			code = status.FromContextError(ctx.Err()).Code()
		}
		return status.Errorf(code, "this node has applied LSN %d, not yet %d: %v", a.s.db.LastLSN(), lsn, err)
	}
	return nil
}
