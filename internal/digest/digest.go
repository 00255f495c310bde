// Package digest sums up a database's contents for tests that compare
// two databases: one loaded from another's image, a restart, a standby.
package digest

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"maps"
	"sort"
	"strings"

	"github.com/mmdb/mmdb/mem"
)

// Table sums up one table: its definition, its rows, and a sum of a hash
// of each row, which does not depend on where the rows lie in pages.
type Table struct {
	Def  string
	Rows uint64
	Sum  uint64
}

// Digest sums up a database as of one LSN.
type Digest struct {
	LSN    uint64
	Tables map[string]Table
}

// Of sums up db as of now.
func Of(db *mem.DB) (Digest, error) {
	sn := db.Snapshot()
	defer sn.Close()
	d := Digest{LSN: sn.LSN(), Tables: map[string]Table{}}
	for _, def := range sn.Tables() {
		t := Table{Def: fmt.Sprintf("%x", def.AppendBinary(nil))}
		err := sn.Scan(def.ID, func(r mem.Record) error {
			h := sha256.Sum256(r.Encoded())
			t.Rows++
			t.Sum += binary.LittleEndian.Uint64(h[:])
			return nil
		})
		if err != nil {
			return Digest{}, fmt.Errorf("digest: table %q: %w", def.Name, err)
		}
		d.Tables[def.Name] = t
	}
	return d, nil
}

// String lists the tables in name order.
func (d Digest) String() string {
	names := make([]string, 0, len(d.Tables))
	for n := range d.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	fmt.Fprintf(&b, "LSN %d:", d.LSN)
	for _, n := range names {
		t := d.Tables[n]
		fmt.Fprintf(&b, " %s(%d rows, sum %016x)", n, t.Rows, t.Sum)
	}
	return b.String()
}

// Equal reports whether d and o sum up the same database at the same LSN.
func (d Digest) Equal(o Digest) bool { return d.LSN == o.LSN && maps.Equal(d.Tables, o.Tables) }
