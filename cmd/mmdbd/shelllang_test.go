package main

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

func TestTokenize(t *testing.T) {
	stmts, err := tokenize(`insert t 1 "a; \"b\"\n" x=y;scan t
	  get t (1,2)`)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]string
	for _, st := range stmts {
		var words []string
		for _, tk := range st {
			w := tk.text
			if tk.quoted {
				w = "Q:" + w
			}
			words = append(words, w)
		}
		got = append(got, words)
	}
	want := [][]string{
		{"insert", "t", "1", "Q:a; \"b\"\n", "x", "=", "y"},
		{"scan", "t"},
		{"get", "t", "(", "1", ",", "2", ")"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %q", got)
	}
	for i := range want {
		if strings.Join(got[i], "|") != strings.Join(want[i], "|") {
			t.Errorf("statement %d: got %q, want %q", i, got[i], want[i])
		}
	}
	if _, err := tokenize(`get t "open`); err == nil || !strings.Contains(err.Error(), "unterminated") {
		t.Fatalf("unterminated string: %v", err)
	}
}

func TestParseValue(t *testing.T) {
	col := func(typ pb.ColumnType) *pb.Column { return &pb.Column{Name: "c", Type: typ} }
	good := []struct {
		tok  token
		typ  pb.ColumnType
		want string
	}{
		{token{text: "-7"}, pb.ColumnType_COLUMN_TYPE_INT64, "-7"},
		{token{text: "0x10"}, pb.ColumnType_COLUMN_TYPE_UINT64, "16"},
		{token{text: "+0x10"}, pb.ColumnType_COLUMN_TYPE_UINT64, "16"},
		{token{text: "+7"}, pb.ColumnType_COLUMN_TYPE_UINT64, "7"},
		{token{text: "+7"}, pb.ColumnType_COLUMN_TYPE_INT64, "7"},
		{token{text: "1.5"}, pb.ColumnType_COLUMN_TYPE_FLOAT64, "1.5"},
		{token{text: "true"}, pb.ColumnType_COLUMN_TYPE_BOOL, "true"},
		{token{text: "null"}, pb.ColumnType_COLUMN_TYPE_STRING, "NULL"},
		{token{text: "null", quoted: true}, pb.ColumnType_COLUMN_TYPE_STRING, `"null"`},
		{token{text: "NULL", quoted: true}, pb.ColumnType_COLUMN_TYPE_STRING, `"NULL"`},
		{token{text: "", quoted: true}, pb.ColumnType_COLUMN_TYPE_STRING, `""`},
		{token{text: "word"}, pb.ColumnType_COLUMN_TYPE_STRING, "word"},
		{token{text: "héllo"}, pb.ColumnType_COLUMN_TYPE_STRING, "héllo"},
		{token{text: "two words", quoted: true}, pb.ColumnType_COLUMN_TYPE_STRING, `"two words"`},
		{token{text: "say \"hi\"\\n", quoted: true}, pb.ColumnType_COLUMN_TYPE_STRING, `"say \"hi\"\\n"`},
		{token{text: "a\tb\nc,d", quoted: true}, pb.ColumnType_COLUMN_TYPE_STRING, `"a\tb\nc,d"`},
		{token{text: "bell\a", quoted: true}, pb.ColumnType_COLUMN_TYPE_STRING, `"bell\a"`},
		{token{text: "0xbeef"}, pb.ColumnType_COLUMN_TYPE_BYTES, "0xbeef"},
		{token{text: "0xbeef", quoted: true}, pb.ColumnType_COLUMN_TYPE_BYTES, "0x307862656566"},
		{token{text: "2026-11-22T10:00:00.5Z"}, pb.ColumnType_COLUMN_TYPE_TIMESTAMP, "2026-11-22T10:00:00.5Z"},
		{token{text: "1000000000"}, pb.ColumnType_COLUMN_TYPE_TIMESTAMP, "1970-01-01T00:00:01Z"},
	}
	for _, g := range good {
		v, err := parseValue(g.tok, col(g.typ))
		if err != nil {
			t.Fatalf("%v as %v: %v", g.tok, g.typ, err)
		}
		if got := formatValue(v); got != g.want {
			t.Errorf("%v as %v: %s, want %s", g.tok, g.typ, got, g.want)
		}
	}
	bad := []struct {
		text string
		typ  pb.ColumnType
	}{
		{"x", pb.ColumnType_COLUMN_TYPE_INT64},
		{"-1", pb.ColumnType_COLUMN_TYPE_UINT64},
		{"++1", pb.ColumnType_COLUMN_TYPE_UINT64},
		{"+-1", pb.ColumnType_COLUMN_TYPE_UINT64},
		{"+", pb.ColumnType_COLUMN_TYPE_UINT64},
		{"maybe", pb.ColumnType_COLUMN_TYPE_BOOL},
		{"0xZZ", pb.ColumnType_COLUMN_TYPE_BYTES},
		{"yesterday", pb.ColumnType_COLUMN_TYPE_TIMESTAMP},
	}
	for _, b := range bad {
		if _, err := parseValue(token{text: b.text}, col(b.typ)); err == nil || !strings.Contains(err.Error(), "column c") {
			t.Errorf("%q as %v: %v", b.text, b.typ, err)
		}
	}
}

// TestParseIntegersDecimalOrHex: the shell reads integers in decimal, a
// leading zero and all (010 is ten, not octal eight), or in hex after 0x.
func TestParseIntegersDecimalOrHex(t *testing.T) {
	int64Col := &pb.Column{Name: "c", Type: pb.ColumnType_COLUMN_TYPE_INT64}
	uint64Col := &pb.Column{Name: "c", Type: pb.ColumnType_COLUMN_TYPE_UINT64}
	for _, g := range []struct {
		text string
		col  *pb.Column
		want string
	}{
		{"010", int64Col, "10"},
		{"-010", int64Col, "-10"},
		{"0755", uint64Col, "755"},
		{"0", uint64Col, "0"},
		{"0x1f", int64Col, "31"},
		{"-0X10", int64Col, "-16"},
		{"0xffffffffffffffff", uint64Col, "18446744073709551615"},
	} {
		v, err := parseValue(token{text: g.text}, g.col)
		if err != nil {
			t.Errorf("%s as %s: %v", g.text, typeName(g.col.GetType()), err)
		} else if got := formatValue(v); got != g.want {
			t.Errorf("%s as %s: %s, want %s", g.text, typeName(g.col.GetType()), got, g.want)
		}
	}
	for _, text := range []string{"08x", "0x", "0xg", "--1"} {
		if v, err := parseValue(token{text: text}, int64Col); err == nil {
			t.Errorf("%s as int64: %s, want an error", text, formatValue(v))
		}
	}
}

func TestParseCreateTable(t *testing.T) {
	stmts, err := tokenize(`create table acct (id int64, name string(16), note bytes(8) null,
		primary key (id) ordered, unique hash index by_name (name), ordered index by_note (note, id))`)
	if err != nil {
		t.Fatal(err)
	}
	p := &parser{toks: stmts[0][2:]}
	got, err := p.parseCreateTable()
	if err != nil {
		t.Fatal(err)
	}
	want := &pb.Table{
		Name: "acct",
		Columns: []*pb.Column{
			{Name: "id", Type: pb.ColumnType_COLUMN_TYPE_INT64},
			{Name: "name", Type: pb.ColumnType_COLUMN_TYPE_STRING, MaxLength: 16},
			{Name: "note", Type: pb.ColumnType_COLUMN_TYPE_BYTES, MaxLength: 8, Nullable: true},
		},
		PrimaryKey:  []string{"id"},
		PrimaryKind: pb.IndexKind_INDEX_KIND_ORDERED,
		Indexes: []*pb.Index{
			{Name: "by_name", Columns: []string{"name"}, Unique: true, Kind: pb.IndexKind_INDEX_KIND_HASH},
			{Name: "by_note", Columns: []string{"note", "id"}, Kind: pb.IndexKind_INDEX_KIND_ORDERED},
		},
	}
	if !proto.Equal(got, want) {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	for _, bad := range []string{
		"create table t (id int32)",
		"create table t (id int64",
		"create table t (id string(x))",
		"create table t (id int64, primary key id)",
		"create table t (id int64) extra",
	} {
		stmts, err := tokenize(bad)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := (&parser{toks: stmts[0][2:]}).parseCreateTable(); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestParseIndexDDL: "create [unique] [hash|ordered] index NAME on T
// (COL, ...)" spells an index as create table's index clauses do (no
// kind is the server's default, hash), or with "using KIND" after the
// columns; "drop index NAME on T". Anything else is an error.
func TestParseIndexDDL(t *testing.T) {
	ordered, hash, none := pb.IndexKind_INDEX_KIND_ORDERED, pb.IndexKind_INDEX_KIND_HASH, pb.IndexKind_INDEX_KIND_UNSPECIFIED
	for stmt, want := range map[string]*pb.Index{
		"create index ix on t (a)":                         {Name: "ix", Columns: []string{"a"}, Kind: none},
		"CREATE UNIQUE INDEX ix ON t (a, b)":               {Name: "ix", Columns: []string{"a", "b"}, Unique: true, Kind: none},
		"create unique ordered index ix on t (a)":          {Name: "ix", Columns: []string{"a"}, Unique: true, Kind: ordered},
		"create hash index ix on t (a)":                    {Name: "ix", Columns: []string{"a"}, Kind: hash},
		"create unique index ix on t (a, b) using ordered": {Name: "ix", Columns: []string{"a", "b"}, Unique: true, Kind: ordered},
		"create index ix on t (\"my col\") USING HASH":     {Name: "ix", Columns: []string{"my col"}, Kind: hash},
	} {
		stmts, err := tokenize(stmt)
		if err != nil {
			t.Fatal(err)
		}
		table, got, err := (&parser{toks: stmts[0][1:]}).parseCreateIndex()
		if err != nil || table != "t" || !proto.Equal(got, want) {
			t.Errorf("%s: table %q, %v, %v; want t, %v", stmt, table, got, err, want)
		}
	}
	for _, bad := range []string{
		"create ix on t (a)",
		"create unique on t (a)",
		"create index on t (a)",
		"create index ix t (a)",
		"create index ix on t",
		"create index ix on t ()",
		"create index ix on t (a",
		"create index ix on t a",
		"create index ix on t (a) using",
		"create index ix on t (a) using btree",
		"create ordered index ix on t (a) using hash",
		"create index ix on t (a) ordered",
		"create index ix on t (a) extra",
	} {
		stmts, err := tokenize(bad)
		if err != nil {
			t.Fatal(err)
		}
		if table, ix, err := (&parser{toks: stmts[0][1:]}).parseCreateIndex(); err == nil {
			t.Errorf("%q parsed: table %q, %v", bad, table, ix)
		}
	}

	stmts, err := tokenize("drop index ix on t")
	if err != nil {
		t.Fatal(err)
	}
	if table, name, err := (&parser{toks: stmts[0][2:]}).parseDropIndex(); err != nil || table != "t" || name != "ix" {
		t.Fatalf("drop index ix on t: table %q, index %q, %v", table, name, err)
	}
	for _, bad := range []string{
		"drop index ix",
		"drop index ix t",
		"drop index ix on",
		"drop index on t",
		"drop index ix on t extra",
		"drop index (ix) on t",
	} {
		stmts, err := tokenize(bad)
		if err != nil {
			t.Fatal(err)
		}
		if table, name, err := (&parser{toks: stmts[0][2:]}).parseDropIndex(); err == nil {
			t.Errorf("%q parsed: table %q, index %q", bad, table, name)
		}
	}
}

func TestOpenParens(t *testing.T) {
	for in, want := range map[string]int{
		"create table t (a int64,": 1,
		`insert t "(" 1`:           0,
		`insert t "\"(" (`:         1,
		"create table t (a int64)": 0,
		"create table t ((":        2,
	} {
		if got := openParens(in); got != want {
			t.Errorf("openParens(%q) = %d, want %d", in, got, want)
		}
	}
}

// FuzzShellParse feeds arbitrary input to the shell's tokenizer and the
// create table and index DDL parsers: errors are fine, panics are not.
func FuzzShellParse(f *testing.F) {
	f.Add(`create table t (id int64, s string(8) null, primary key (id) ordered, unique hash index ix (s))`)
	f.Add(`insert t 1 "a\"b"; scan t prefix 1 from 2 to 3 reverse limit 4`)
	f.Add(`update t 1 set a = "x", b = null`)
	f.Add(`unique ordered index ix on t (a, b) using hash; ix on t`)
	f.Fuzz(func(t *testing.T, input string) {
		stmts, err := tokenize(input)
		if err != nil {
			return
		}
		for _, st := range stmts {
			_, _ = (&parser{toks: st}).parseCreateTable()
			_, _, _ = (&parser{toks: st}).parseCreateIndex()
			_, _, _ = (&parser{toks: st}).parseDropIndex()
			p := &parser{toks: st}
			_, _ = p.values([]*pb.Column{{Name: "a", Type: pb.ColumnType_COLUMN_TYPE_TIMESTAMP}, {Name: "b", Type: pb.ColumnType_COLUMN_TYPE_BYTES}}, "set")
		}
		_ = openParens(input)
	})
}

// TestParseIntegersSignBeforeHex: a sign goes before 0x; one after it
// is refused. Before, "0x-5" was read as -5 and "0x+5" as 5 (the parse
// of the digits after 0x took the sign).
func TestParseIntegersSignBeforeHex(t *testing.T) {
	for _, c := range []*pb.Column{{Name: "c", Type: pb.ColumnType_COLUMN_TYPE_INT64}, {Name: "c", Type: pb.ColumnType_COLUMN_TYPE_UINT64}} {
		for _, text := range []string{"0x-5", "0x+5", "-0x-5", "0X-5"} {
			if v, err := parseValue(token{text: text}, c); err == nil {
				t.Errorf("%s as %s: %s, want an error", text, typeName(c.GetType()), formatValue(v))
			}
		}
	}
	if v, err := parseValue(token{text: "-0x5"}, &pb.Column{Name: "c", Type: pb.ColumnType_COLUMN_TYPE_INT64}); err != nil || formatValue(v) != "-5" {
		t.Errorf("-0x5 as int64: %v %v", v, err)
	}
}

// TestParseBytesHexEitherCase: a bare 0XHEX is hex bytes, as 0xHEX is
// and as integers take 0X; before, "0XBEEF" became the six bytes of its
// text, silently.
func TestParseBytesHexEitherCase(t *testing.T) {
	col := &pb.Column{Name: "c", Type: pb.ColumnType_COLUMN_TYPE_BYTES}
	v, err := parseValue(token{text: "0XBEEF"}, col)
	if err != nil || formatValue(v) != "0xbeef" {
		t.Errorf("0XBEEF as bytes: %v %v, want 0xbeef", v, err)
	}
	if _, err := parseValue(token{text: "0XZZ"}, col); err == nil {
		t.Error("0XZZ as bytes: no error")
	}
}

// TestTokenizeRefusesUnknownEscapes: a backslash in a quoted string
// starts one of the escapes \" \\ \n \t; any other is refused, naming
// it. Before, the backslash was dropped: "C:\dir" was stored as "C:dir".
func TestTokenizeRefusesUnknownEscapes(t *testing.T) {
	for _, in := range []string{`insert t 1 "C:\dir"`, `insert t 1 "\x41"`, `insert t 1 "\é"`} {
		if _, err := tokenize(in); err == nil || !strings.Contains(err.Error(), "unknown escape") {
			t.Errorf("%s: %v, want an unknown escape", in, err)
		}
	}
	stmts, err := tokenize(`insert t 1 "a\\b\"c\n\t"`)
	if err != nil || len(stmts) != 1 || stmts[0][3].text != "a\\b\"c\n\t" {
		t.Errorf("the known escapes: %v %v", stmts, err)
	}
}
