package main

import (
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mmdb/mmdb/client"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

// The shell's language. Statements end at ';' or at a newline outside
// parentheses. Words are
// case-insensitive; values are bare words or "double-quoted strings"
// (with \" \\ \n \t escapes) and are typed by the column they go to.
const shellHelp = `statements (end with ; or a newline outside parentheses):
  tables                               list tables with rows and bytes
  describe T                           show a table's columns and indexes
  create table T (COL TYPE [(MAXLEN)] [null], ..., primary key (COL, ...) [hash|ordered],
                  [unique] [hash|ordered] index NAME (COL, ...), ...)
                                       TYPE: int64 uint64 float64 bool string bytes timestamp
  drop table T
  create [unique] [hash|ordered] index NAME on T (COL, ...)
                                       add an index to a table, built from its rows; the
                                       kind (hash if none) may end it instead: using hash|ordered
  drop index NAME on T
  get T [index I] KEY...               read a row by primary key or a unique index
  scan T [index I] [prefix V...] [from V...] [to V...] [through V...] [reverse] [limit N]
                                       from is inclusive, to exclusive, through inclusive;
                                       limit defaults to 100
  insert T V...                        all columns, in table order
  upsert T V...
  update T [index I] KEY... set COL = V [, COL = V]...
                                       the row by primary key or a unique index
  delete T [index I] KEY...
  begin | commit | rollback            an interactive transaction
  status                               the node's role, LSNs and tables
  help
  exit | quit                          end the shell; what follows does not run
values: null, numbers (integers in decimal, or in hex as 0xHEX), true/false, words or
"quoted strings", bytes as 0xHEX or a string, timestamps as RFC 3339
(2026-11-22T10:00:00Z) or nanoseconds since the epoch. Results show NULL for null,
and a string quoted where it would read otherwise ("", "null", "two words").
`

// token is a word, a quoted string, or one of ( ) , ; =
type token struct {
	text   string
	quoted bool
}

// is reports whether t is the bare word or punctuation w (any case).
func (t token) is(w string) bool { return !t.quoted && strings.EqualFold(t.text, w) }

// tokenize splits input into statements of tokens.
func tokenize(input string) ([][]token, error) {
	var stmts [][]token
	var cur []token
	end := func() {
		if len(cur) > 0 {
			stmts = append(stmts, cur)
			cur = nil
		}
	}
	depth := 0 // open parentheses: a newline inside them does not end the statement
	for i := 0; i < len(input); {
		ch := input[i]
		switch {
		case ch == ';' || (ch == '\n' && depth == 0):
			end()
			depth = 0
			i++
		case ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n':
			i++
		case strings.IndexByte("(),=", ch) >= 0:
			cur = append(cur, token{text: string(ch)})
			switch ch {
			case '(':
				depth++
			case ')':
				depth = max(depth-1, 0)
			}
			i++
		case ch == '"':
			var b strings.Builder
			j := i + 1
			for ; j < len(input) && input[j] != '"'; j++ {
				if input[j] == '\\' && j+1 < len(input) {
					j++
					switch input[j] {
					case 'n':
						b.WriteByte('\n')
					case 't':
						b.WriteByte('\t')
					case '"', '\\':
						b.WriteByte(input[j])
					default:
						// Dropping the backslash would change the
						// value unseen ("C:\dir" stored as "C:dir").
						r, _ := utf8.DecodeRuneInString(input[j:])
						return nil, fmt.Errorf("unknown escape \\%c in the string starting at %q: the escapes are \\\" \\\\ \\n \\t", r, truncate(input[i:], 20))
					}
					continue
				}
				b.WriteByte(input[j])
			}
			if j >= len(input) {
				return nil, fmt.Errorf("unterminated string starting at %q", truncate(input[i:], 20))
			}
			cur = append(cur, token{text: b.String(), quoted: true})
			i = j + 1
		default:
			j := i
			for j < len(input) && strings.IndexByte(" \t\r\n;(),=\"", input[j]) < 0 {
				j++
			}
			cur = append(cur, token{text: input[i:j]})
			i = j
		}
	}
	end()
	return stmts, nil
}

// openParens counts the parentheses input leaves open, outside strings,
// so the interactive shell can read a statement over several lines.
func openParens(input string) int {
	depth, quoted := 0, false
	for i := 0; i < len(input); i++ {
		switch c := input[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == '(':
			depth++
		case !quoted && c == ')':
			depth--
		}
	}
	return depth
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// parseValue reads a token as a value of the column's type.
func parseValue(t token, col *pb.Column) (*pb.Value, error) {
	if t.is("null") {
		return client.Null(), nil
	}
	s := t.text
	bad := func(err error) (*pb.Value, error) {
		return nil, fmt.Errorf("column %s (%s): %q: %w", col.GetName(), typeName(col.GetType()), s, err)
	}
	switch col.GetType() {
	case pb.ColumnType_COLUMN_TYPE_INT64:
		text, base := intBase(s)
		v, err := strconv.ParseInt(text, base, 64)
		if err != nil {
			return bad(err)
		}
		return client.Int64(v), nil
	case pb.ColumnType_COLUMN_TYPE_UINT64:
		text, base := intBase(s)
		v, err := strconv.ParseUint(strings.TrimPrefix(text, "+"), base, 64) // ParseUint takes no sign; ParseInt takes +
		if err != nil {
			return bad(err)
		}
		return client.Uint64(v), nil
	case pb.ColumnType_COLUMN_TYPE_FLOAT64:
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return bad(err)
		}
		return client.Float64(v), nil
	case pb.ColumnType_COLUMN_TYPE_BOOL:
		v, err := strconv.ParseBool(s)
		if err != nil {
			return bad(err)
		}
		return client.Bool(v), nil
	case pb.ColumnType_COLUMN_TYPE_STRING:
		return client.String(s), nil
	case pb.ColumnType_COLUMN_TYPE_BYTES:
		if !t.quoted && len(s) >= 2 && strings.EqualFold(s[:2], "0x") { // as integers take 0X too
			b, err := hex.DecodeString(s[2:])
			if err != nil {
				return bad(err)
			}
			return client.Bytes(b), nil
		}
		return client.Bytes([]byte(s)), nil
	case pb.ColumnType_COLUMN_TYPE_TIMESTAMP:
		if ns, err := strconv.ParseInt(s, 10, 64); err == nil {
			return client.Time(time.Unix(0, ns)), nil
		}
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return bad(err)
		}
		return client.Time(v), nil
	}
	return bad(fmt.Errorf("unknown column type"))
}

// intBase returns an integer's text and base for ParseInt and ParseUint:
// hex after 0x (the prefix cut), else decimal, so that a leading zero
// does not make a number octal (010 is ten). A sign goes before the 0x:
// after it ("0x-5") the text is returned whole, for the parse to refuse.
func intBase(s string) (string, int) {
	sign, digits := "", s
	if s != "" && (s[0] == '-' || s[0] == '+') {
		sign, digits = s[:1], s[1:]
	}
	if hex, ok := strings.CutPrefix(strings.ToLower(digits), "0x"); ok && !strings.HasPrefix(hex, "-") && !strings.HasPrefix(hex, "+") {
		return sign + hex, 16
	}
	return s, 10
}

var typeNames = map[string]pb.ColumnType{
	"int64": pb.ColumnType_COLUMN_TYPE_INT64, "uint64": pb.ColumnType_COLUMN_TYPE_UINT64,
	"float64": pb.ColumnType_COLUMN_TYPE_FLOAT64, "bool": pb.ColumnType_COLUMN_TYPE_BOOL,
	"string": pb.ColumnType_COLUMN_TYPE_STRING, "bytes": pb.ColumnType_COLUMN_TYPE_BYTES,
	"timestamp": pb.ColumnType_COLUMN_TYPE_TIMESTAMP,
}

func typeName(t pb.ColumnType) string {
	for n, v := range typeNames {
		if v == t {
			return n
		}
	}
	return t.String()
}

// formatValue prints a value for a result table.
func formatValue(v *pb.Value) string {
	switch k := v.GetKind().(type) {
	case *pb.Value_Int64:
		return strconv.FormatInt(k.Int64, 10)
	case *pb.Value_Uint64:
		return strconv.FormatUint(k.Uint64, 10)
	case *pb.Value_Float64:
		return strconv.FormatFloat(k.Float64, 'g', -1, 64)
	case *pb.Value_Bool:
		return strconv.FormatBool(k.Bool)
	case *pb.Value_String_:
		return formatString(k.String_)
	case *pb.Value_Bytes:
		return "0x" + hex.EncodeToString(k.Bytes)
	case *pb.Value_Timestamp:
		return k.Timestamp.AsTime().Format(time.RFC3339Nano)
	default:
		return "NULL"
	}
}

// formatString prints a string as the shell reads it: bare, or quoted
// with the shell's escapes where it would read otherwise, so that the
// string "NULL" is not shown as NULL, an empty one as nothing, nor one
// with spaces, tabs or line breaks as several values. Other control
// characters, which the shell cannot read, show as Go escapes.
func formatString(s string) string {
	bare := s != "" && !strings.EqualFold(s, "null")
	for _, r := range s {
		if strings.ContainsRune(" \t\r\n;(),=\"\\", r) || !strconv.IsPrint(r) {
			bare = false
			break
		}
	}
	if bare {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if strconv.IsPrint(r) || r == ' ' {
				b.WriteRune(r)
			} else {
				b.WriteString(strings.Trim(strconv.QuoteRune(r), "'"))
			}
		}
	}
	b.WriteByte('"')
	return b.String()
}

// parser walks one statement's tokens.
type parser struct {
	toks []token
	pos  int
}

func (p *parser) more() bool { return p.pos < len(p.toks) }

func (p *parser) peek() token {
	if p.more() {
		return p.toks[p.pos]
	}
	return token{}
}

// accept consumes the bare word or punctuation w if it is next.
func (p *parser) accept(w string) bool {
	if p.more() && p.toks[p.pos].is(w) {
		p.pos++
		return true
	}
	return false
}

func (p *parser) expect(w string) error {
	if !p.accept(w) {
		return fmt.Errorf("expected %q, found %s", w, p.found())
	}
	return nil
}

func (p *parser) found() string {
	if !p.more() {
		return "the end of the statement"
	}
	return strconv.Quote(p.peek().text)
}

// name consumes a name (a bare word or quoted string).
func (p *parser) name(what string) (string, error) {
	t := p.peek()
	if !p.more() || (!t.quoted && strings.ContainsAny(t.text, "(),=")) {
		return "", fmt.Errorf("expected %s, found %s", what, p.found())
	}
	p.pos++
	return t.text, nil
}

// rowCount reads a scan's limit: a decimal number of rows that fits the
// request's 32 bits.
func (p *parser) rowCount() (uint32, error) {
	n, err := p.name("a row count")
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(n, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("limit %q: not a row count from 0 to %d: %w", n, uint32(math.MaxUint32), err)
	}
	return uint32(v), nil
}

// names reads "(a, b, ...)".
func (p *parser) names(what string) ([]string, error) {
	if err := p.expect("("); err != nil {
		return nil, err
	}
	var out []string
	for {
		n, err := p.name(what)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
		if p.accept(")") {
			return out, nil
		}
		if err := p.expect(","); err != nil {
			return nil, err
		}
	}
}

// values reads tokens as values of cols until a keyword in stop or the end.
func (p *parser) values(cols []*pb.Column, stop ...string) ([]*pb.Value, error) {
	var out []*pb.Value
	for p.more() {
		t := p.peek()
		for _, s := range stop {
			if t.is(s) {
				return out, nil
			}
		}
		if len(out) >= len(cols) {
			return nil, fmt.Errorf("too many values: %q is past the last of %d columns", t.text, len(cols))
		}
		v, err := parseValue(t, cols[len(out)])
		if err != nil {
			return nil, err
		}
		out = append(out, v)
		p.pos++
	}
	return out, nil
}

// lastName reads a name that ends the statement.
func (p *parser) lastName(what string) (string, error) {
	n, err := p.name(what)
	if err != nil {
		return "", err
	}
	return n, p.end()
}

func (p *parser) end() error {
	if p.more() {
		return fmt.Errorf("unexpected %s", p.found())
	}
	return nil
}

// parseCreateTable parses what follows "create table".
func (p *parser) parseCreateTable() (*pb.Table, error) {
	name, err := p.name("a table name")
	if err != nil {
		return nil, err
	}
	t := &pb.Table{Name: name}
	if err := p.expect("("); err != nil {
		return nil, err
	}
	for {
		if err := p.parseTableItem(t); err != nil {
			return nil, err
		}
		if p.accept(")") {
			return t, p.end()
		}
		if err := p.expect(","); err != nil {
			return nil, err
		}
	}
}

// parseCreateIndex parses what follows "create": an index clause as in
// create table, "[unique] [hash|ordered] index NAME", then "on T (COL,
// ...)", with the kind as SQL spells it, "using hash|ordered", allowed
// after the columns instead. It returns the table and the index.
func (p *parser) parseCreateIndex() (string, *pb.Index, error) {
	unique := p.accept("unique")
	kind := p.parseIndexKind()
	if !p.accept("index") {
		return "", nil, fmt.Errorf(`expected "table" or "[unique] [hash|ordered] index", found %s`, p.found())
	}
	name, err := p.name("an index name")
	if err != nil {
		return "", nil, err
	}
	if err := p.expect("on"); err != nil {
		return "", nil, err
	}
	table, err := p.name("a table name")
	if err != nil {
		return "", nil, err
	}
	cols, err := p.names("an index column")
	if err != nil {
		return "", nil, err
	}
	if p.accept("using") {
		if kind != pb.IndexKind_INDEX_KIND_UNSPECIFIED {
			return "", nil, fmt.Errorf("index %s: the kind is given twice", name)
		}
		if kind = p.parseIndexKind(); kind == pb.IndexKind_INDEX_KIND_UNSPECIFIED {
			return "", nil, fmt.Errorf(`expected "hash" or "ordered", found %s`, p.found())
		}
	}
	return table, &pb.Index{Name: name, Columns: cols, Unique: unique, Kind: kind}, p.end()
}

// parseDropIndex parses what follows "drop index": "NAME on T". It
// returns the table and the index's name.
func (p *parser) parseDropIndex() (string, string, error) {
	name, err := p.name("an index name")
	if err != nil {
		return "", "", err
	}
	if err := p.expect("on"); err != nil {
		return "", "", err
	}
	table, err := p.lastName("a table name")
	return table, name, err
}

// parseIndexKind reads an optional "hash" or "ordered".
func (p *parser) parseIndexKind() pb.IndexKind {
	switch {
	case p.accept("hash"):
		return pb.IndexKind_INDEX_KIND_HASH
	case p.accept("ordered"):
		return pb.IndexKind_INDEX_KIND_ORDERED
	}
	return pb.IndexKind_INDEX_KIND_UNSPECIFIED
}

// parseTableItem reads a column, the primary key, or an index.
func (p *parser) parseTableItem(t *pb.Table) error {
	if p.accept("primary") {
		if err := p.expect("key"); err != nil {
			return err
		}
		cols, err := p.names("a key column")
		if err != nil {
			return err
		}
		t.PrimaryKey, t.PrimaryKind = cols, p.parseIndexKind()
		return nil
	}
	save := p.pos
	unique := p.accept("unique")
	kind := p.parseIndexKind()
	if p.accept("index") {
		name, err := p.name("an index name")
		if err != nil {
			return err
		}
		cols, err := p.names("an index column")
		if err != nil {
			return err
		}
		t.Indexes = append(t.Indexes, &pb.Index{Name: name, Columns: cols, Unique: unique, Kind: kind})
		return nil
	}
	p.pos = save
	name, err := p.name("a column name")
	if err != nil {
		return err
	}
	typ, err := p.name("a column type")
	if err != nil {
		return err
	}
	ct, ok := typeNames[strings.ToLower(typ)]
	if !ok {
		return fmt.Errorf("column %s: unknown type %q (int64 uint64 float64 bool string bytes timestamp)", name, typ)
	}
	col := &pb.Column{Name: name, Type: ct}
	if p.accept("(") {
		n, err := p.name("a max length")
		if err != nil {
			return err
		}
		l, err := strconv.ParseUint(n, 10, 32)
		if err != nil {
			return fmt.Errorf("column %s: max length %q: %w", name, n, err)
		}
		col.MaxLength = uint32(l)
		if err := p.expect(")"); err != nil {
			return err
		}
	}
	col.Nullable = p.accept("null") || p.accept("nullable")
	t.Columns = append(t.Columns, col)
	return nil
}
