// Package replica moves a node's data to other nodes (SPEC 6 and 7): it
// ships a primary's log to its standbys (Sender, Receiver, over
// ReplicationService.Ship), keeps the epoch history that fences old
// primaries and finds where two logs diverged (Epochs), and streams
// images (ImageServer, ImageStream over ImageService). An image's LSN is
// where a node that loaded it follows the log from.
//
// # Log shipping
//
// The primary opens one Ship stream per standby and says hello (its
// name, address, epoch history and last LSN); the standby answers with
// its applied LSN, or refuses (not a peer, an older epoch, a log that
// diverged). The primary then sends the records after that LSN, in LSN
// order, in batches of up to 256 KiB (S2-compressed when that pays, with
// a CRC-32C over the batch), from its ring of recent records
// (durability.Ring) or, for a standby further behind, from its log files.
// It ships only records that meet its own durability level, so a standby
// never holds a commit its primary could lose in a crash that level
// survives. The standby checks each batch whole (checksum, no gap, the
// link's epoch, every record decodes) before any of it is acknowledged
// as received; one applier logs each record at the standby's own level
// and applies it, in LSN order, then acknowledges it as applied. Commits
// on the primary wait for Quorum acknowledgements as their sync mode asks
// (Sender.Wait), up to a timeout after which they degrade or go on
// waiting.
//
// Every start of a primary begins a new incarnation of its epoch and
// every promotion a new epoch (Epochs); a standby compares its history
// with its sender's and refuses a log it has records of another lineage
// for, from the LSN where the two part (Diverged).
//
// # Image stream
//
// FetchImage sends the bytes of an image file (package image) in chunks.
// The first message of every stream describes the image (LSN, id,
// epoch, size, rows, and the serving node's epoch history up to the LSN,
// which the loading node takes as its own, so that it refuses a later
// primary whose log parts from the image's); each chunk carries its offset and a CRC-32C over
// the image id, the offset and the data, so a chunk damaged in transit,
// delivered at the wrong offset or taken from another image is caught
// before a byte of it is used. The image's own frame checksums are then
// checked again by whoever reads it. A transfer that breaks resumes with
// the image's LSN, id and the offset reached; the serving node keeps the
// image for a while after its last stream ends (checkpoint.Shelf).
package replica

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/checkpoint/image"
	"github.com/mmdb/mmdb/internal/secure"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// ChunkCRC is the checksum of a chunk: CRC-32C of the image id (4 bytes),
// the chunk's offset (8 bytes), both little endian, and its data.
func ChunkCRC(id uint32, off uint64, data []byte) uint32 {
	var b [12]byte
	binary.LittleEndian.PutUint32(b[:], id)
	binary.LittleEndian.PutUint64(b[4:], off)
	return crc32.Update(crc32.Checksum(b[:], castagnoli), castagnoli, data)
}

// Images is where an ImageServer gets the images it serves
// (checkpoint.Shelf).
type Images interface {
	Get(ctx context.Context, id checkpoint.ImageID) (*checkpoint.Served, error)
	Put(img *checkpoint.Served)
}

// ImageServer implements ImageService.
type ImageServer struct {
	pb.UnimplementedImageServiceServer
	images  Images
	chunk   int
	history func(lsn uint64) []EpochStart
	logger  hclog.Logger
}

// DefaultChunkBytes is the data in one chunk: large enough that per-message
// costs vanish, small enough to fit any max_message_bytes.
const DefaultChunkBytes = 1 << 20

// NewImageServer serves images from images in chunks of chunkBytes,
// each described with the epoch history history gives for its LSN
// (Epochs.Image; nil: none).
func NewImageServer(images Images, chunkBytes int, history func(lsn uint64) []EpochStart, logger hclog.Logger) *ImageServer {
	if logger == nil {
		logger = hclog.NewNullLogger()
	}
	return &ImageServer{images: images, chunk: chunkBytes, history: history, logger: logger}
}

// FetchImage streams an image from the requested offset.
func (s *ImageServer) FetchImage(req *pb.FetchImageRequest, stream grpc.ServerStreamingServer[pb.FetchImageResponse]) error {
	ctx := stream.Context()
	resume := checkpoint.ImageID{LSN: req.GetLsn(), ID: req.GetId()}
	if resume == (checkpoint.ImageID{}) && req.GetOffset() != 0 {
		return status.Errorf(codes.InvalidArgument, "offset %d without the image's lsn and id: a transfer resumes on the image it began with", req.GetOffset())
	}
	img, err := s.images.Get(ctx, resume)
	switch {
	case err == nil:
	case errors.Is(err, checkpoint.ErrImageGone), errors.Is(err, checkpoint.ErrEmpty):
		return status.Error(codes.FailedPrecondition, err.Error())
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err()).Err()
	default:
		s.logger.Error("could not make an image to serve", "error", err)
		return status.Errorf(codes.Internal, "could not make an image: %v", err)
	}
	defer s.images.Put(img)
	size, off := img.Size, req.GetOffset()
	if off > uint64(size) {
		return status.Errorf(codes.OutOfRange, "offset %d is past the end of image %d (%d bytes)", off, img.Header.LSN, size)
	}
	name := img.Name()
	msg := &pb.FetchImageResponse{Image: &pb.ImageInfo{
		Lsn: name.LSN, Id: name.ID, Epoch: img.Header.Epoch, Bytes: uint64(size), Rows: img.Rows,
	}}
	if s.history != nil {
		msg.Image.Epochs = epochsToPB(s.history(name.LSN))
	}
	buf := make([]byte, min(int64(s.chunk), size))
	for {
		n := min(int64(len(buf)), size-int64(off))
		if _, err := img.ReadAt(buf[:n], int64(off)); err != nil {
			s.logger.Error("could not read a served image", "lsn", name.LSN, "offset", off, "error", err)
			return status.Errorf(codes.Internal, "read image %d at offset %d: %v", name.LSN, off, err)
		}
		msg.Offset, msg.Data, msg.Crc32C = off, buf[:n], ChunkCRC(name.ID, off, buf[:n])
		// buf is reused for the next chunk: mmdb's codec has copied it
		// into the encoded message by the time Send returns.
		if err := stream.Send(msg); err != nil {
			return err
		}
		msg.Image = nil
		off += uint64(n)
		if off == uint64(size) {
			return nil
		}
	}
}

// Keepalive pings between peers: a node's gRPC server must allow pings
// this often (keepalive.EnforcementPolicy).
const (
	KeepaliveTime    = 10 * time.Second
	KeepaliveTimeout = 10 * time.Second
)

// Dial connects to a peer node: flow-control windows as every mmdb
// connection has them, and room for a whole image chunk in a message.
func Dial(addr string, opts ...grpc.DialOption) (*grpc.ClientConn, error) {
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(pb.WindowBytes), grpc.WithInitialConnWindowSize(pb.ConnWindowBytes),
		// A link that silently stops carrying anything is found within
		// KeepaliveTime plus KeepaliveTimeout, not after the kernel's
		// two hours; a broken one is dialled again soon.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: KeepaliveTime, Timeout: KeepaliveTimeout}),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second}}),
	}, opts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("replica: connect to %s: %w", addr, err)
	}
	return conn, nil
}

// Fetch fetches an image from the node at addr and hands the stream to
// use, which reads it.
func Fetch(ctx context.Context, addr string, opts FetchOptions, use func(*ImageStream) error) error {
	conn, err := Dial(addr, opts.DialOptions...)
	if err != nil {
		return err
	}
	s, err := OpenImage(ctx, conn, opts)
	if err == nil {
		err = use(s)
		s.Close()
	}
	if cerr := conn.Close(); cerr != nil {
		err = errors.Join(err, fmt.Errorf("replica: close the connection to %s: %w", addr, cerr))
	}
	if err != nil {
		return fmt.Errorf("replica: fetch the image of %s: %w", addr, err)
	}
	return nil
}

// ImageInfo describes the image an ImageStream reads.
type ImageInfo struct {
	Name  checkpoint.ImageID
	Epoch uint64
	Size  int64
	Rows  uint64
}

// FetchOptions configure an ImageStream.
type FetchOptions struct {
	// Resume, if set, goes on with that image from Offset: a transfer
	// broken off earlier, whose first Offset bytes the caller holds.
	Resume checkpoint.ImageID
	Offset int64
	// Patience is how long the stream goes on trying, after the last
	// chunk it received, before it gives up (default 1 min); Backoff is
	// the first pause between attempts (default 100 ms), doubled each
	// time up to 2 s.
	Patience time.Duration
	Backoff  time.Duration
	// ProgressEvery, if set, is how often Read logs how far the transfer
	// is.
	ProgressEvery time.Duration
	Logger        hclog.Logger
	// DialOptions are added to the connection's: its transport
	// credentials, for one.
	DialOptions []grpc.DialOption
}

// ImageStream reads an image from a node: an io.Reader over the image's
// bytes that resumes, on the same image, where a broken transfer
// stopped. Only what arrived whole and checked is ever handed to Read.
type ImageStream struct {
	ctx     context.Context
	cancel  context.CancelFunc
	client  pb.ImageServiceClient
	opts    FetchOptions
	info    ImageInfo
	known   bool         // info came from the node
	epochs  []EpochStart // the history the node first described it with
	recv    int64        // bytes received and checked
	pending []byte
	stream  pb.ImageService_FetchImageClient
	stop    context.CancelFunc // ends stream
	resumes int
	start   time.Time
	logged  time.Time // when progress was last logged
}

// retryable marks a failed attempt worth making again.
type retryable struct{ error }

func (r retryable) Unwrap() error { return r.error }

// OpenImage starts fetching an image over cc and waits for its
// description.
func OpenImage(ctx context.Context, cc grpc.ClientConnInterface, opts FetchOptions) (*ImageStream, error) {
	if opts.Patience <= 0 {
		opts.Patience = time.Minute
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 100 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	s := &ImageStream{client: pb.NewImageServiceClient(cc), opts: opts, recv: opts.Offset, start: time.Now()}
	s.logged = s.start
	s.ctx, s.cancel = context.WithCancel(ctx)
	if opts.Resume != (checkpoint.ImageID{}) {
		s.info.Name = opts.Resume
	}
	if err := s.next(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Info describes the image.
func (s *ImageStream) Info() ImageInfo { return s.info }

// Offset returns how many of the image's bytes Read has returned, plus
// the Offset it resumed from.
func (s *ImageStream) Offset() int64 { return s.recv - int64(len(s.pending)) }

// Resumes returns how often the transfer broke and was resumed.
func (s *ImageStream) Resumes() int { return s.resumes }

// Read reads the image's bytes; io.EOF at its end.
func (s *ImageStream) Read(p []byte) (int, error) {
	for len(s.pending) == 0 {
		if s.recv == s.info.Size {
			return 0, io.EOF
		}
		if err := s.next(); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.pending)
	s.pending = s.pending[n:]
	if s.opts.ProgressEvery > 0 && time.Since(s.logged) >= s.opts.ProgressEvery {
		s.logged = time.Now()
		s.opts.Logger.Info("receiving the image", "lsn", s.info.Name.LSN, "received-bytes", s.Offset(), "bytes", s.info.Size,
			"mb-per-s", fmt.Sprintf("%.0f", float64(s.Offset()-s.opts.Offset)/1e6/time.Since(s.start).Seconds()))
	}
	return n, nil
}

// Close ends the transfer.
func (s *ImageStream) Close() { s.cancel() }

// next receives the next chunk into pending, opening a stream (again)
// as needed; it gives up after Patience without one.
func (s *ImageStream) next() error {
	backoff := s.opts.Backoff
	start := time.Now()
	for {
		err := s.receive()
		if err == nil {
			return nil
		}
		s.endStream()
		if !errors.As(err, new(retryable)) || time.Since(start)+backoff > s.opts.Patience || s.ctx.Err() != nil {
			return fmt.Errorf("replica: fetch image at offset %d: %w", s.recv, err)
		}
		s.opts.Logger.Warn("the image transfer broke; resuming", "offset", s.recv, "bytes", s.info.Size, "pause", backoff, "error", err)
		select {
		case <-time.After(backoff):
		case <-s.ctx.Done():
			return fmt.Errorf("replica: fetch image at offset %d: %w", s.recv, s.ctx.Err())
		}
		backoff = min(2*backoff, 2*time.Second)
		s.resumes++
	}
}

// receive receives and checks one message, opening a stream if none is
// open.
func (s *ImageStream) receive() error {
	first := s.stream == nil
	if first {
		ctx, stop := context.WithCancel(s.ctx)
		req := &pb.FetchImageRequest{Lsn: s.info.Name.LSN, Id: s.info.Name.ID, Offset: uint64(s.recv)}
		stream, err := s.client.FetchImage(ctx, req)
		if err != nil {
			stop()
			return classify(err)
		}
		s.stream, s.stop = stream, stop
	}
	msg, err := s.stream.Recv()
	if errors.Is(err, io.EOF) {
		return retryable{fmt.Errorf("the node ended the stream at offset %d of %d", s.recv, s.info.Size)}
	}
	if err != nil {
		return classify(err)
	}
	if err := s.describe(msg.GetImage(), first); err != nil {
		return err
	}
	// What fails a check may have been damaged on the way: ask again.
	data := msg.GetData()
	switch {
	case msg.GetOffset() != uint64(s.recv):
		return retryable{fmt.Errorf("the node sent offset %d, not %d", msg.GetOffset(), s.recv)}
	case int64(len(data)) > s.info.Size-s.recv:
		return retryable{fmt.Errorf("the node sent %d bytes at offset %d, past the image's end at %d", len(data), s.recv, s.info.Size)}
	case len(data) == 0 && s.recv < s.info.Size:
		// No nearer the end: a node that went on sending these would
		// keep the reader looping, never past Patience.
		return retryable{fmt.Errorf("the node sent a chunk of no bytes at offset %d of %d", s.recv, s.info.Size)}
	case msg.GetCrc32C() != ChunkCRC(s.info.Name.ID, msg.GetOffset(), data):
		return retryable{fmt.Errorf("the chunk at offset %d failed its checksum", s.recv)}
	case s.recv == 0 && len(data) >= image.HeaderSize:
		// The description is not checksummed, but the image's header is:
		// they must agree.
		h, err := image.DecodeHeader(data)
		if err == nil && (h.LSN != s.info.Name.LSN || h.ID() != s.info.Name.ID || h.Epoch != s.info.Epoch) {
			err = fmt.Errorf("image %d/%08x epoch %d, described as %d/%08x epoch %d", h.LSN, h.ID(), h.Epoch, s.info.Name.LSN, s.info.Name.ID, s.info.Epoch)
		}
		if err != nil {
			s.info, s.known = ImageInfo{Name: s.opts.Resume}, false // ask afresh
			return retryable{fmt.Errorf("the image's header does not match its description: %w", err)}
		}
	}
	s.pending = data
	s.recv += int64(len(data))
	return nil
}

// describe checks the image a stream's first message describes: on a
// resumed transfer it must be the image begun with.
func (s *ImageStream) describe(info *pb.ImageInfo, first bool) error {
	switch {
	case first && info == nil:
		return retryable{errors.New("the node's first message does not describe the image")}
	case !first && info != nil:
		return retryable{errors.New("the node described the image again mid-stream")}
	case !first:
		return nil
	}
	got := ImageInfo{Name: checkpoint.ImageID{LSN: info.GetLsn(), ID: info.GetId()}, Epoch: info.GetEpoch(), Size: int64(info.GetBytes()), Rows: info.GetRows()}
	switch {
	case s.known && got != s.info, !s.known && s.info.Name != (checkpoint.ImageID{}) && got.Name != s.info.Name:
		return retryable{fmt.Errorf("the node sent image %d/%08x of %d bytes, not %d/%08x", got.Name.LSN, got.Name.ID, got.Size, s.info.Name.LSN, s.info.Name.ID)}
	case got.Size < s.recv:
		return retryable{fmt.Errorf("the image has %d bytes, fewer than the %d already received", got.Size, s.recv)}
	}
	if !s.known {
		// The image's first description names its history. Without one
		// that fits, the loading node takes the image's records on
		// trust, as from a node that gave none.
		s.epochs = nil
		if hist := epochsFromPB(info.GetEpochs()); len(hist) > 0 {
			if err := checkImageEpochs(hist, got); err != nil {
				s.opts.Logger.Warn("the image's epoch history does not fit it; loading it without one", "lsn", got.Name.LSN, "error", err)
			} else {
				s.epochs = hist
			}
		}
	}
	s.info, s.known = got, true
	return nil
}

// checkImageEpochs checks the history an image came with: a history
// (checkEpochs) whose stretches start at or below the image's LSN, the
// one holding that LSN of the image's epoch.
func checkImageEpochs(hist []EpochStart, info ImageInfo) error {
	if err := checkEpochs(hist); err != nil {
		return fmt.Errorf("a bad epoch history: %w", err)
	}
	if last := hist[len(hist)-1]; last.Start > max(info.Name.LSN, 1) || last.Epoch != info.Epoch {
		return fmt.Errorf("an epoch history ending with epoch %d at LSN %d, for an image of epoch %d at LSN %d", last.Epoch, last.Start, info.Epoch, info.Name.LSN)
	}
	return nil
}

// Epochs returns the epoch history the node described the image with
// (the stretches up to its LSN, Epochs.Image), or nil if it gave none:
// a node that loads the image takes it as its own (Epochs.Adopt).
func (s *ImageStream) Epochs() []EpochStart { return s.epochs }

// endStream drops the open stream, if any.
func (s *ImageStream) endStream() {
	if s.stop != nil {
		s.stop()
	}
	s.stream, s.stop = nil, nil
}

// classify marks the errors of a broken link or a node that is busy or
// restarting as worth retrying; the others (the image is gone, a bad
// request, a node certificate that did not verify, which gRPC reports
// as UNAVAILABLE but which fails every attempt alike) are final.
func classify(err error) error {
	if secure.IsCertError(err) {
		return err
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Internal, codes.Aborted, codes.DataLoss, codes.ResourceExhausted, codes.Unknown:
		return retryable{err}
	}
	return err
}
