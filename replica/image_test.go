package replica_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/checkpoint"
	"github.com/mmdb/mmdb/durability"
	"github.com/mmdb/mmdb/internal/faultproxy"
	"github.com/mmdb/mmdb/internal/grpctest"
	"github.com/mmdb/mmdb/mem"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/replica"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// chunkBytes is small so that an image of about a megabyte takes many
// chunks.
const chunkBytes = 16 << 10

// source is a node serving images of a database of about a megabyte of
// incompressible rows.
type source struct {
	db    *mem.DB
	shelf *checkpoint.Shelf
	addr  string
}

func newSource(t *testing.T, keep time.Duration) *source {
	t.Helper()
	return newSourceWith(t, keep, nil)
}

// newSourceWith is newSource describing its images with the epoch
// history history gives.
func newSourceWith(t *testing.T, keep time.Duration, history func(uint64) []replica.EpochStart) *source {
	t.Helper()
	st, err := durability.Open(durability.Options{Level: durability.NoLog})
	if err != nil {
		t.Fatal(err)
	}
	db := st.DB()
	tbl, err := db.CreateTable(mem.TableDef{Name: "blob", Columns: []mem.ColumnDef{
		{Name: "id", Type: mem.TypeInt64}, {Name: "data", Type: mem.TypeBytes, MaxLen: 1024},
	}, PrimaryKey: []string{"id"}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 1000 {
		b := make([]byte, 1000)
		_, _ = rand.Read(b)
		tx := db.Begin()
		if err := tx.Insert(tbl, []mem.Value{mem.Int64(int64(i)), mem.Bytes(b)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	s := &source{db: db}
	s.shelf = checkpoint.NewShelf(checkpoint.ShelfOptions{
		Source: func(ctx context.Context) (*checkpoint.Served, error) { return checkpoint.Encode(ctx, db, nil) },
		LSN:    db.LastLSN, Keep: keep,
	})
	srv := grpc.NewServer()
	pb.RegisterImageServiceServer(srv, replica.NewImageServer(s.shelf, chunkBytes, history, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	s.addr = lis.Addr().String()
	t.Cleanup(func() {
		srv.Stop()
		if err := s.shelf.Close(); err != nil {
			t.Error(err)
		}
		if err := st.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// image returns the bytes of the image the source serves now.
func (s *source) image(t *testing.T) []byte {
	t.Helper()
	img, err := s.shelf.Get(context.Background(), checkpoint.ImageID{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.shelf.Put(img)
	b, err := io.ReadAll(io.NewSectionReader(img, 0, img.Size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fetch reads an image from addr whole.
func fetch(t *testing.T, addr string, opts replica.FetchOptions) ([]byte, *replica.ImageStream, error) {
	t.Helper()
	var got []byte
	var stream *replica.ImageStream
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	opts.Backoff = time.Millisecond
	err := replica.Fetch(ctx, addr, opts, func(st *replica.ImageStream) error {
		stream = st
		var err error
		got, err = io.ReadAll(st)
		return err
	})
	return got, stream, err
}

// TestFetch: a fetched image is the served image, byte for byte, and
// described as it is.
func TestFetch(t *testing.T) {
	s := newSource(t, time.Minute)
	got, st, err := fetch(t, s.addr, replica.FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := s.image(t)
	if !bytes.Equal(got, want) {
		t.Fatalf("fetched %d bytes, not the %d served", len(got), len(want))
	}
	info := st.Info()
	if info.Size != int64(len(want)) || info.Name.LSN != s.db.LastLSN() || info.Rows != 1000 || st.Resumes() != 0 {
		t.Fatalf("described as %+v with %d resumes", info, st.Resumes())
	}
}

// TestFetchReportsProgress: a fetch with ProgressEvery logs how far the
// transfer is as the bytes arrive, up to the whole image (SPEC 7:
// progress is reported to the receiver).
func TestFetchReportsProgress(t *testing.T) {
	s := newSource(t, time.Minute)
	var logged bytes.Buffer
	got, _, err := fetch(t, s.addr, replica.FetchOptions{ProgressEvery: time.Nanosecond, Logger: hclog.New(&hclog.LoggerOptions{Output: &logged})})
	if err != nil {
		t.Fatal(err)
	}
	lines := regexp.MustCompile(`receiving the image: lsn=\d+ received-bytes=(\d+) bytes=(\d+)`).FindAllStringSubmatch(logged.String(), -1)
	received := 0
	for _, l := range lines {
		n, _ := strconv.Atoi(l[1])
		if n <= received || l[2] != strconv.Itoa(len(got)) {
			t.Fatalf("a progress line after %d of %d bytes: %s", received, len(got), l[0])
		}
		received = n
	}
	if len(lines) < 2 || received != len(got) {
		t.Fatalf("%d progress lines, the last at %d bytes of %d:\n%s", len(lines), received, len(got), logged.String())
	}
}

// TestFetchResumesAfterCuts: a link cut anywhere in the transfer, or
// several times, is resumed on the same image, which arrives whole.
func TestFetchResumesAfterCuts(t *testing.T) {
	s := newSource(t, time.Minute)
	want := s.image(t)
	for _, cuts := range [][]int64{{10}, {200}, {5000}, {300 << 10}, {900 << 10}, {100 << 10, 300 << 10, 500 << 10}} {
		t.Run(fmt.Sprint(cuts), func(t *testing.T) {
			p := faultproxy.New(t, s.addr)
			p.CutAt(cuts...)
			got, st, err := fetch(t, p.Addr(), replica.FetchOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("fetched %d bytes, not the %d served", len(got), len(want))
			}
			if st.Resumes() < 1 || p.Cuts() != len(cuts) {
				t.Fatalf("%d cuts, %d resumes", p.Cuts(), st.Resumes())
			}
		})
	}
}

// TestFetchCatchesDamage: a byte damaged on the way fails a chunk's
// checksum (or the connection); the chunk is fetched again and the image
// arrives whole.
func TestFetchCatchesDamage(t *testing.T) {
	s := newSource(t, time.Minute)
	want := s.image(t)
	for _, at := range []int64{20 << 10, 123457, 400 << 10, 800 << 10} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			p := faultproxy.New(t, s.addr)
			p.FlipAt(at)
			got, st, err := fetch(t, p.Addr(), replica.FetchOptions{Logger: hclog.New(&hclog.LoggerOptions{Output: &logBuf{t}})})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("fetched %d bytes, not the %d served (equal lengths: %v)", len(got), len(want), len(got) == len(want))
			}
			if st.Resumes() < 1 {
				t.Fatal("the damaged byte went unnoticed")
			}
		})
	}
}

// TestResumeLater: a transfer broken off resumes later, from the bytes
// the caller kept, as long as the node keeps the image; once it does not,
// resuming fails with FAILED_PRECONDITION at once.
func TestResumeLater(t *testing.T) {
	keep := 300 * time.Millisecond
	s := newSource(t, keep)
	want := s.image(t)
	var head []byte
	var name checkpoint.ImageID
	err := replica.Fetch(context.Background(), s.addr, replica.FetchOptions{}, func(st *replica.ImageStream) error {
		name = st.Info().Name
		head = make([]byte, 100000)
		_, err := io.ReadFull(st, head)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	rest, _, err := fetch(t, s.addr, replica.FetchOptions{Resume: name, Offset: int64(len(head))})
	if err != nil {
		t.Fatal(err)
	}
	if got := append(head, rest...); !bytes.Equal(got, want) {
		t.Fatalf("resumed to %d bytes, not the %d served", len(got), len(want))
	}
	time.Sleep(3 * keep)
	start := time.Now()
	_, _, err = fetch(t, s.addr, replica.FetchOptions{Resume: name, Offset: int64(len(head))})
	if status.Code(err) != codes.FailedPrecondition || time.Since(start) > 5*time.Second {
		t.Fatalf("resume an image no longer kept: %v after %s", err, time.Since(start))
	}
}

// TestBadFetchRequests: an offset without an image, or past its end, is
// refused; a node that is not there is given up on after the retries.
func TestBadFetchRequests(t *testing.T) {
	s := newSource(t, time.Minute)
	conn, err := replica.Dial(s.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := pb.NewImageServiceClient(conn)
	for _, c := range []struct {
		req  *pb.FetchImageRequest
		code codes.Code
	}{
		{&pb.FetchImageRequest{Offset: 5}, codes.InvalidArgument},
		{&pb.FetchImageRequest{Lsn: 3, Id: 4, Offset: 5}, codes.FailedPrecondition},
	} {
		stream, err := client.FetchImage(context.Background(), c.req)
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != c.code {
			t.Errorf("%v: %v; want %s", c.req, err, c.code)
		}
	}
	img, err := s.shelf.Get(context.Background(), checkpoint.ImageID{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.shelf.Put(img)
	stream, err := client.FetchImage(context.Background(), &pb.FetchImageRequest{Lsn: img.Name().LSN, Id: img.Name().ID, Offset: uint64(img.Size) + 1})
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.OutOfRange {
		t.Errorf("an offset past the end: %v", err)
	}
	_, _, err = fetch(t, grpctest.DeadAddr(t), replica.FetchOptions{Patience: 300 * time.Millisecond})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("a node that is not there: %v", err)
	}
}

type logBuf struct{ t *testing.T }

func (l *logBuf) Write(b []byte) (int, error) { l.t.Log(string(b)); return len(b), nil }
