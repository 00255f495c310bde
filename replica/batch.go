package replica

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/klauspost/compress/s2"

	"github.com/mmdb/mmdb/durability"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// ErrBatch is returned, wrapped, for a log batch that fails its checks.
var ErrBatch = errors.New("replica: bad log batch")

// Limits on a log batch.
const (
	// batchBytes is the record bytes a sender puts in one batch (a larger
	// record goes alone).
	batchBytes = 256 << 10
	// maxBatchRaw bounds a batch's records uncompressed: a record is at
	// most 16 MiB (the log's block), and a batch holds one that large
	// alone.
	maxBatchRaw = 17 << 20
	// minCompress is the smallest batch worth compressing.
	minCompress = 512
)

// Shipped is a record on its way to a standby.
type Shipped struct {
	LSN  uint64
	Body []byte
}

// batchCRC is a batch's checksum (see LogBatch in the proto).
func batchCRC(first uint64, count uint32, epoch uint64, raw uint32, compressed bool, data []byte) uint32 {
	var b [25]byte
	binary.LittleEndian.PutUint64(b[0:], first)
	binary.LittleEndian.PutUint32(b[8:], count)
	binary.LittleEndian.PutUint64(b[12:], epoch)
	binary.LittleEndian.PutUint32(b[20:], raw)
	if compressed {
		b[24] = 1
	}
	return crc32.Update(crc32.Checksum(b[:], castagnoli), castagnoli, data)
}

// batchEncoder builds log batches, reusing a buffer for the records
// before compression.
type batchEncoder struct {
	raw []byte
}

// encode returns the messages that carry recs (consecutive, at least
// one), each with at most maxData bytes of data. The messages own their
// data: gRPC may look at a message after Send has returned.
func (e *batchEncoder) encode(recs []durability.Record, epoch, senderLSN uint64, maxData int) ([]*pb.LogBatch, error) {
	e.raw = e.raw[:0]
	for _, r := range recs {
		e.raw = binary.AppendUvarint(e.raw, uint64(len(r.Body)))
		e.raw = append(e.raw, r.Body...)
	}
	if len(e.raw) > maxBatchRaw {
		return nil, fmt.Errorf("replica: a batch of %d records from LSN %d is %d bytes; the most is %d", len(recs), recs[0].LSN, len(e.raw), maxBatchRaw)
	}
	var data []byte
	compressed := false
	if len(e.raw) >= minCompress {
		data = s2.Encode(nil, e.raw)
		compressed = len(data) < len(e.raw)
	}
	if !compressed {
		data = slices.Clone(e.raw)
	}
	b := pb.LogBatch{
		FirstLsn: recs[0].LSN, Count: uint32(len(recs)), Epoch: epoch, Compressed: compressed,
		RawBytes: uint32(len(e.raw)), SenderLsn: senderLSN,
	}
	b.Crc32C = batchCRC(b.FirstLsn, b.Count, epoch, b.RawBytes, compressed, data)
	var out []*pb.LogBatch
	for {
		piece := pb.LogBatch{FirstLsn: b.FirstLsn, Count: b.Count, Epoch: b.Epoch, Compressed: b.Compressed,
			RawBytes: b.RawBytes, SenderLsn: b.SenderLsn, Crc32C: b.Crc32C}
		n := min(len(data), maxData)
		piece.Data, data = data[:n], data[n:]
		piece.More = len(data) > 0
		out = append(out, &piece)
		if !piece.More {
			return out, nil
		}
	}
}

// batchDecoder puts a batch back together from its pieces and splits it
// into records. The records it returns own their memory.
type batchDecoder struct {
	head *pb.LogBatch // the first piece of the batch being assembled
	data []byte       // the pieces' data so far
}

// add takes the next piece; it returns the batch's records once the last
// piece is in, nil before.
func (d *batchDecoder) add(b *pb.LogBatch) ([]Shipped, error) {
	if d.head == nil {
		if !b.More {
			return decodeBatch(b, b.Data)
		}
		d.head, d.data = b, nil
	} else if b.FirstLsn != d.head.FirstLsn || b.Count != d.head.Count || b.Epoch != d.head.Epoch ||
		b.RawBytes != d.head.RawBytes || b.Compressed != d.head.Compressed || b.Crc32C != d.head.Crc32C {
		return nil, fmt.Errorf("%w: a piece of the batch from LSN %d has other fields than the first", ErrBatch, d.head.FirstLsn)
	}
	if len(d.data)+len(b.Data) > maxBatchRaw+maxBatchRaw/8 {
		return nil, fmt.Errorf("%w: the batch from LSN %d has more than %d bytes", ErrBatch, d.head.FirstLsn, maxBatchRaw)
	}
	d.data = append(d.data, b.Data...)
	if b.More {
		return nil, nil
	}
	head, data := d.head, d.data
	d.head, d.data = nil, nil
	return decodeBatch(head, data)
}

// decodeBatch checks a whole batch and splits it into records, which
// alias data or a buffer of their own.
func decodeBatch(b *pb.LogBatch, data []byte) ([]Shipped, error) {
	if b.Count == 0 || b.FirstLsn == 0 || b.FirstLsn+uint64(b.Count)-1 < b.FirstLsn {
		return nil, fmt.Errorf("%w: %d records from LSN %d", ErrBatch, b.Count, b.FirstLsn)
	}
	if b.RawBytes > maxBatchRaw || b.Count > b.RawBytes {
		return nil, fmt.Errorf("%w: %d records in %d bytes from LSN %d; the most is %d bytes", ErrBatch, b.Count, b.RawBytes, b.FirstLsn, maxBatchRaw)
	}
	if got := batchCRC(b.FirstLsn, b.Count, b.Epoch, b.RawBytes, b.Compressed, data); got != b.Crc32C {
		return nil, fmt.Errorf("%w: checksum %08x, want %08x, in the batch from LSN %d", ErrBatch, got, b.Crc32C, b.FirstLsn)
	}
	raw := data
	if b.Compressed {
		n, err := s2.DecodedLen(data)
		if err != nil || n != int(b.RawBytes) {
			return nil, fmt.Errorf("%w: the batch from LSN %d decompresses to %d bytes, not %d: %v", ErrBatch, b.FirstLsn, n, b.RawBytes, err)
		}
		if raw, err = s2.Decode(make([]byte, n), data); err != nil {
			return nil, fmt.Errorf("%w: decompress the batch from LSN %d: %w", ErrBatch, b.FirstLsn, err)
		}
	}
	if len(raw) != int(b.RawBytes) {
		return nil, fmt.Errorf("%w: the batch from LSN %d holds %d bytes, not %d", ErrBatch, b.FirstLsn, len(raw), b.RawBytes)
	}
	recs := make([]Shipped, 0, min(b.Count, 1024))
	for i := range uint64(b.Count) {
		n, w := binary.Uvarint(raw)
		if w <= 0 || n > uint64(len(raw)-w) {
			return nil, fmt.Errorf("%w: record %d of the batch from LSN %d overruns it", ErrBatch, i, b.FirstLsn)
		}
		recs = append(recs, Shipped{LSN: b.FirstLsn + i, Body: raw[w : w+int(n)]})
		raw = raw[w+int(n):]
	}
	if len(raw) != 0 {
		return nil, fmt.Errorf("%w: %d bytes after the last record of the batch from LSN %d", ErrBatch, len(raw), b.FirstLsn)
	}
	return recs, nil
}
