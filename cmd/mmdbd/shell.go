package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/peterh/liner"
	"golang.org/x/term"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/mmdb/mmdb/client"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
)

const shellUsage = `usage: mmdbd shell [flags]

Statements typed at a terminal are read with line editing and history; a
statement that fails prints its error and the session goes on. Statements
given with -c, or read from a file or pipe on stdin (mmdbd shell <
script), run in order until one fails: its error goes to stderr (with its
line, for stdin), nothing after it runs, and the exit code is 1; it is 0
when all ran. An "exit" or "quit" statement ends them. A transaction left open
when the shell ends is rolled back. "help" in the shell lists the
statements.

flags:
`

// shell runs the interactive shell, or the statements of -c or of a
// script on stdin.
func shell(args []string, stdin io.Reader, stdout, stderr io.Writer) (err error) {
	fs := flag.NewFlagSet("mmdbd shell", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), shellUsage)
		fs.PrintDefaults()
	}
	addrs := fs.String("addr", "", "the node's `host:port`; several, comma-separated, to fail over (default: -config's listen address and peers, else "+defaultAddr+")")
	commands := fs.String("c", "", "run these `statements` and exit, 1 at the first that fails (stdin is not read)")
	timeout := fs.Duration("timeout", 10*time.Second, "the deadline of each statement")
	cf := addConnFlags(fs, true)
	if err := cf.parse(fs, args); err != nil {
		return err
	}
	list, err := cf.addrs(*addrs)
	if err != nil {
		return err
	}
	opts, err := cf.clientOptions(list)
	if err != nil {
		return err
	}
	c, err := client.New(opts)
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, c.Close()) }()
	sh := &session{c: c, out: &errWriter{w: stdout}, timeout: *timeout, schemas: map[string]*pb.Table{},
		explain: func(err error) error { return cf.explain(c.Addr(), err) }}
	defer sh.abandon(stderr)
	switch {
	case *commands != "":
		if err := sh.run(*commands); !errors.Is(err, errQuit) {
			return err
		}
		return nil
	case isTerminal(stdin):
		return sh.interactive(stderr)
	}
	return sh.script(stdin)
}

// isTerminal reports whether r is a terminal, where a person types.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// session is the shell's state: the client, the open transaction, and
// the table definitions it has looked up.
type session struct {
	c       *client.Client
	explain func(error) error // says why a call failed, when it can (connFlags.explain)
	out     *errWriter        // run checks it after each statement
	timeout time.Duration
	tx      *client.Tx
	schemas map[string]*pb.Table
}

// abandon rolls back a transaction left open when the shell ends.
func (sh *session) abandon(stderr io.Writer) {
	if sh.tx == nil {
		return
	}
	ctx, cancel := sh.ctx()
	defer cancel()
	if err := sh.tx.WithContext(ctx).Rollback(); err != nil {
		fmt.Fprintf(stderr, "rollback of the open transaction: %v\n", err)
	} else {
		fmt.Fprintln(stderr, "rolled back the open transaction")
	}
	sh.endTx()
}

func (sh *session) endTx() { sh.tx = nil }

// interactive reads statements from the terminal on stdin with line
// editing and history until EOF (Ctrl-D) or "exit"; a statement that
// fails does not end it.
func (sh *session) interactive(stderr io.Writer) (err error) {
	ln := liner.NewLiner()
	defer closeInto(&err, ln, "the terminal (restore its mode)")
	ln.SetCtrlCAborts(true)
	history := ""
	if home, err := os.UserHomeDir(); err == nil {
		history = filepath.Join(home, ".mmdb_history")
		if f, err := os.Open(history); err == nil {
			_, _ = ln.ReadHistory(f) // a damaged history file only loses history
			if err := f.Close(); err != nil {
				fmt.Fprintf(stderr, "close %s: %v\n", history, err)
			}
		}
	}
	fmt.Fprintf(sh.out, "connected to %s; \"help\" lists the statements, Ctrl-D quits\n", sh.c.Addr())
	for {
		prompt := "mmdb> "
		if sh.tx != nil {
			prompt = fmt.Sprintf("mmdb tx %d> ", sh.tx.ID())
		}
		line, err := ln.Prompt(prompt)
		for err == nil && openParens(line) > 0 {
			var more string
			more, err = ln.Prompt("...> ")
			line += "\n" + more
		}
		if errors.Is(err, io.EOF) || errors.Is(err, liner.ErrPromptAborted) {
			break
		}
		if err != nil {
			return fmt.Errorf("read a statement: %w", err)
		}
		if quits(line) {
			break
		}
		if strings.TrimSpace(line) != "" {
			ln.AppendHistory(line)
		}
		if err := sh.run(line); errors.Is(err, errQuit) {
			break
		} else if err != nil {
			fmt.Fprintf(stderr, "error: %v\n", err)
		}
	}
	if history == "" {
		return nil
	}
	return saveHistory(history, ln.WriteHistory)
}

// saveHistory writes the shell's history to path with write. The file is
// readable by its user alone, as the statements hold the data they wrote;
// one an earlier mmdbd left readable by all is narrowed too.
func saveHistory(path string, write func(io.Writer) (int, error)) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	defer closeInto(&err, f, path)
	if err := f.Chmod(0o600); err != nil {
		return fmt.Errorf("save history: %w", err)
	}
	if _, err := write(f); err != nil {
		return fmt.Errorf("save history to %s: %w", path, err)
	}
	return nil
}

// quits reports whether a line ends the shell.
func quits(line string) bool {
	line = strings.TrimSpace(line)
	return line == "exit" || line == "quit"
}

// script runs the statements of r, a file or a pipe, as the interactive
// shell would read them (a line, or several while parentheses are open),
// until one fails: its error, with the line where it starts, is the
// script's.
func (sh *session) script(r io.Reader) error {
	br := bufio.NewReader(r)
	read := 0 // lines
	for {
		first := read + 1
		text, err := readStatement(br, &read)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the statements from stdin (line %d): %w", first, err)
		}
		if quits(text) {
			return nil
		}
		if err := sh.run(text); errors.Is(err, errQuit) {
			return nil
		} else if err != nil {
			return fmt.Errorf("line %d: %w", first, err)
		}
	}
}

// readStatement reads a line of r, and the lines after it while it leaves
// parentheses open; *read counts the lines. It returns io.EOF once r is
// used up.
func readStatement(r *bufio.Reader, read *int) (string, error) {
	var b strings.Builder
	for {
		line, err := r.ReadString('\n') // any length, unlike liner's ReadLine
		if line != "" {
			*read++
			b.WriteString(line)
		}
		switch {
		case errors.Is(err, io.EOF) && b.Len() > 0:
			return b.String(), nil
		case err != nil:
			return "", err
		case openParens(b.String()) <= 0:
			return b.String(), nil
		}
	}
}

// errQuit is run's error after an "exit" or "quit" statement: the
// statements after it do not run, and the shell ends, without failing.
var errQuit = errors.New("quit")

// run runs every statement of input, stopping at the first error or at
// "exit" (errQuit).
func (sh *session) run(input string) error {
	stmts, err := tokenize(input)
	if err != nil {
		return err
	}
	for _, st := range stmts {
		err := sh.exec(&parser{toks: st})
		if sh.out.err != nil { // and err, if any, is the write's
			return fmt.Errorf("%s ran, but its output was not printed: %w", st[0].text, sh.out.err)
		}
		if errors.Is(err, errQuit) {
			return err
		}
		if err != nil && grpcstatus.Code(err) == codes.DeadlineExceeded {
			return fmt.Errorf("%w (gave up after the statement's -timeout %s)", plainError(err), sh.timeout)
		}
		if err != nil {
			return plainError(sh.explain(err))
		}
	}
	return nil
}

// plainError shows a gRPC error as its code and message, without grpc's
// "rpc error: code = ... desc =" wrapping.
func plainError(err error) error {
	if st, ok := grpcstatus.FromError(err); ok {
		return fmt.Errorf("%s: %s", codeName(st.Code().String()), st.Message())
	}
	return err
}

// codeName spells a code's Go name (AlreadyExists) as gRPC documents it
// (ALREADY_EXISTS).
func codeName(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String())
}

func (sh *session) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), sh.timeout)
}

// exec runs one statement.
func (sh *session) exec(p *parser) error {
	ctx, cancel := sh.ctx()
	defer cancel()
	word, _ := p.name("a statement")
	switch strings.ToLower(word) {
	case "help":
		fmt.Fprint(sh.out, shellHelp)
		return p.end()
	case "tables":
		return sh.tables(ctx, p)
	case "describe":
		return sh.describe(ctx, p)
	case "create":
		if !p.accept("table") {
			table, ix, err := p.parseCreateIndex()
			if err != nil {
				return err
			}
			delete(sh.schemas, table)
			return sh.done(sh.c.CreateIndex(ctx, table, ix))
		}
		t, err := p.parseCreateTable()
		if err != nil {
			return err
		}
		lsn, err := sh.c.CreateTable(ctx, t)
		return sh.done(lsn, err)
	case "drop":
		if p.accept("index") {
			table, name, err := p.parseDropIndex()
			if err != nil {
				return err
			}
			delete(sh.schemas, table)
			return sh.done(sh.c.DropIndex(ctx, table, name))
		}
		if !p.accept("table") {
			return fmt.Errorf(`expected "table" or "index", found %s`, p.found())
		}
		name, err := p.lastName("a table name")
		if err != nil {
			return err
		}
		delete(sh.schemas, name)
		lsn, err := sh.c.DropTable(ctx, name)
		return sh.done(lsn, err)
	case "get":
		return sh.get(ctx, p)
	case "scan":
		return sh.scan(ctx, p)
	case "insert", "upsert":
		return sh.put(ctx, p, strings.ToLower(word) == "upsert")
	case "update":
		return sh.update(ctx, p)
	case "delete":
		return sh.delete(ctx, p)
	case "exit", "quit":
		if err := p.end(); err != nil {
			return err
		}
		return errQuit
	case "begin", "commit", "rollback":
		if err := p.end(); err != nil {
			return err
		}
		return sh.txStatement(ctx, strings.ToLower(word))
	case "status":
		if err := p.end(); err != nil {
			return err
		}
		st, err := sh.c.Status(ctx)
		if err != nil {
			return err
		}
		return printStatus(sh.out, toStatusJSON(st))
	case "":
		return fmt.Errorf("expected a statement, found %s", p.found())
	default:
		return fmt.Errorf("unknown statement %q; \"help\" lists them", word)
	}
}

// done reports a write.
func (sh *session) done(lsn uint64, err error) error {
	if err != nil {
		return err
	}
	if sh.tx != nil && lsn == 0 {
		fmt.Fprintln(sh.out, "ok")
		return nil
	}
	fmt.Fprintf(sh.out, "ok, lsn %d\n", lsn)
	return nil
}

func (sh *session) txStatement(ctx context.Context, word string) error {
	switch {
	case word == "begin" && sh.tx != nil:
		return fmt.Errorf("transaction %d is open; commit or roll it back first", sh.tx.ID())
	case word != "begin" && sh.tx == nil:
		return fmt.Errorf("no transaction is open")
	}
	switch word {
	case "begin":
		// Each later statement binds the transaction to its own context.
		tx, err := sh.c.Begin(ctx)
		if err != nil {
			return err
		}
		sh.tx = tx
		fmt.Fprintf(sh.out, "transaction %d\n", tx.ID())
		return nil
	case "commit":
		defer sh.endTx()
		lsn, err := sh.tx.WithContext(ctx).Commit()
		if err != nil {
			return err
		}
		fmt.Fprintf(sh.out, "committed, lsn %d\n", lsn)
		return nil
	default:
		defer sh.endTx()
		if err := sh.tx.WithContext(ctx).Rollback(); err != nil {
			return err
		}
		fmt.Fprintln(sh.out, "rolled back")
		return nil
	}
}

// schema returns a table's definition, looked up once.
func (sh *session) schema(ctx context.Context, name string) (*pb.Table, error) {
	if t, ok := sh.schemas[name]; ok {
		return t, nil
	}
	t, err := sh.c.DescribeTable(ctx, name)
	if err != nil {
		return nil, err
	}
	sh.schemas[name] = t
	return t, nil
}

// findIndex returns a table's index; nil for "", the primary key.
func findIndex(t *pb.Table, index string) (*pb.Index, error) {
	if index == "" {
		return nil, nil
	}
	i := slices.IndexFunc(t.GetIndexes(), func(ix *pb.Index) bool { return ix.GetName() == index })
	if i < 0 {
		return nil, fmt.Errorf("table %s has no index %q", t.GetName(), index)
	}
	return t.GetIndexes()[i], nil
}

// keyPositions returns where the columns of a table's index are among
// its columns (and a row's values); "" is the primary key.
func keyPositions(t *pb.Table, index string) ([]int, error) {
	names := t.GetPrimaryKey()
	ix, err := findIndex(t, index)
	if err != nil {
		return nil, err
	}
	if ix != nil {
		names = ix.GetColumns()
	}
	pos := make([]int, len(names))
	for i, n := range names {
		pos[i] = slices.IndexFunc(t.GetColumns(), func(c *pb.Column) bool { return c.GetName() == n })
		if pos[i] < 0 {
			return nil, fmt.Errorf("table %s: key column %q is not a column", t.GetName(), n)
		}
	}
	return pos, nil
}

// keyColumns returns the columns of a table's index; "" is the primary key.
func keyColumns(t *pb.Table, index string) ([]*pb.Column, error) {
	pos, err := keyPositions(t, index)
	if err != nil {
		return nil, err
	}
	cols := make([]*pb.Column, len(pos))
	for i, j := range pos {
		cols[i] = t.GetColumns()[j]
	}
	return cols, nil
}

// tableAndIndex reads "T [index I]".
func (sh *session) tableAndIndex(ctx context.Context, p *parser) (*pb.Table, string, []*pb.Column, error) {
	name, err := p.name("a table name")
	if err != nil {
		return nil, "", nil, err
	}
	t, err := sh.schema(ctx, name)
	if err != nil {
		return nil, "", nil, err
	}
	index := ""
	if p.accept("index") {
		if index, err = p.name("an index name"); err != nil {
			return nil, "", nil, err
		}
	}
	cols, err := keyColumns(t, index)
	return t, index, cols, err
}

func (sh *session) get(ctx context.Context, p *parser) error {
	t, index, cols, err := sh.tableAndIndex(ctx, p)
	if err != nil {
		return err
	}
	key, err := p.values(cols)
	if err != nil {
		return err
	}
	var row client.Row
	var found bool
	if sh.tx != nil {
		row, found, err = sh.tx.WithContext(ctx).GetBy(t.GetName(), index, key...)
	} else {
		row, found, err = sh.c.GetBy(ctx, t.GetName(), index, key...)
	}
	if err != nil {
		return err
	}
	if !found {
		return sh.printRows(t, nil)
	}
	return sh.printRows(t, []client.Row{row})
}

var scanWords = []string{"prefix", "from", "to", "through", "reverse", "limit"}

func (sh *session) scan(ctx context.Context, p *parser) error {
	t, index, cols, err := sh.tableAndIndex(ctx, p)
	if err != nil {
		return err
	}
	req := &pb.ScanRequest{Table: t.GetName(), Index: index, Limit: 100}
	rest := func() []*pb.Column { return cols[min(len(req.Prefix), len(cols)):] }
	for p.more() {
		switch {
		case p.accept("prefix"):
			req.Prefix, err = p.values(cols, scanWords...)
		case p.accept("from"):
			req.Lower, err = p.values(rest(), scanWords...)
		case p.accept("to"):
			req.Upper, err = p.values(rest(), scanWords...)
		case p.accept("through"):
			req.Upper, err = p.values(rest(), scanWords...)
			req.UpperInclusive = true
		case p.accept("reverse"):
			req.Reverse = true
		case p.accept("limit"):
			req.Limit, err = p.rowCount()
		default:
			return fmt.Errorf("expected one of %s, found %s", strings.Join(scanWords, ", "), p.found())
		}
		if err != nil {
			return err
		}
	}
	var rows []client.Row
	if sh.tx != nil {
		rows, err = sh.tx.WithContext(ctx).Scan(req)
	} else {
		rows, err = sh.c.Scan(ctx, req)
	}
	if err != nil {
		return err
	}
	return sh.printRows(t, rows)
}

func (sh *session) put(ctx context.Context, p *parser, replace bool) error {
	name, err := p.name("a table name")
	if err != nil {
		return err
	}
	t, err := sh.schema(ctx, name)
	if err != nil {
		return err
	}
	row, err := p.values(t.GetColumns())
	if err != nil {
		return err
	}
	var lsn uint64
	switch {
	case sh.tx != nil && replace:
		err = sh.tx.WithContext(ctx).Upsert(name, row...)
	case sh.tx != nil:
		err = sh.tx.WithContext(ctx).Insert(name, row...)
	case replace:
		lsn, err = sh.c.Upsert(ctx, name, row...)
	default:
		lsn, err = sh.c.Insert(ctx, name, row...)
	}
	return sh.done(lsn, err)
}

func (sh *session) update(ctx context.Context, p *parser) error {
	t, index, cols, err := sh.tableAndIndex(ctx, p)
	if err != nil {
		return err
	}
	key, err := p.values(cols, "set")
	if err != nil {
		return err
	}
	if err := p.expect("set"); err != nil {
		return err
	}
	var sets []client.Set
	for {
		col, err := p.name("a column name")
		if err != nil {
			return err
		}
		i := slices.IndexFunc(t.GetColumns(), func(c *pb.Column) bool { return c.GetName() == col })
		if i < 0 {
			return fmt.Errorf("table %s has no column %q", t.GetName(), col)
		}
		if err := p.expect("="); err != nil {
			return err
		}
		if !p.more() {
			return fmt.Errorf("column %s: expected a value", col)
		}
		v, err := parseValue(p.peek(), t.GetColumns()[i])
		if err != nil {
			return err
		}
		p.pos++
		sets = append(sets, client.Set{Column: col, Value: v})
		if !p.accept(",") {
			break
		}
	}
	if err := p.end(); err != nil {
		return err
	}
	if index != "" {
		return sh.byIndex(ctx, t, index, key, func(tx *client.Tx, pk []*pb.Value) error { return tx.Update(t.GetName(), pk, sets...) })
	}
	if sh.tx != nil {
		return sh.done(0, sh.tx.WithContext(ctx).Update(t.GetName(), key, sets...))
	}
	return sh.done(sh.c.Update(ctx, t.GetName(), key, sets...))
}

func (sh *session) delete(ctx context.Context, p *parser) error {
	t, index, cols, err := sh.tableAndIndex(ctx, p)
	if err != nil {
		return err
	}
	key, err := p.values(cols)
	if err != nil {
		return err
	}
	if index != "" {
		return sh.byIndex(ctx, t, index, key, func(tx *client.Tx, pk []*pb.Value) error { return tx.Delete(t.GetName(), pk...) })
	}
	if sh.tx != nil {
		return sh.done(0, sh.tx.WithContext(ctx).Delete(t.GetName(), key...))
	}
	return sh.done(sh.c.Delete(ctx, t.GetName(), key...))
}

// byIndex runs write, an update or a delete, on the row whose key in a
// unique index is key, by its primary key: it reads the row through the
// index first, in the same transaction (the open one, or one of its own),
// so that no other commit can change which row that is in between.
func (sh *session) byIndex(ctx context.Context, t *pb.Table, index string, key []*pb.Value, write func(tx *client.Tx, pk []*pb.Value) error) error {
	ix, err := findIndex(t, index)
	if err != nil {
		return err
	}
	if !ix.GetUnique() {
		return fmt.Errorf("table %s: index %s is not unique, so a key may name several rows; update and delete take the primary key or a unique index", t.GetName(), index)
	}
	pkPos, err := keyPositions(t, "")
	if err != nil {
		return err
	}
	run := func(tx *client.Tx) error {
		row, found, err := tx.GetBy(t.GetName(), index, key...)
		if err != nil {
			return err
		}
		if !found {
			shown := make([]string, len(key))
			for i, v := range key {
				shown[i] = formatValue(v)
			}
			return grpcstatus.Errorf(codes.NotFound, "row not found: table %q: index %s (%s)", t.GetName(), index, strings.Join(shown, ", "))
		}
		pk := make([]*pb.Value, len(pkPos))
		for i, j := range pkPos {
			pk[i] = row[j]
		}
		return write(tx, pk)
	}
	if sh.tx != nil {
		return sh.done(0, run(sh.tx.WithContext(ctx)))
	}
	return sh.done(sh.c.Tx(ctx, run))
}

func (sh *session) tables(ctx context.Context, p *parser) error {
	if err := p.end(); err != nil {
		return err
	}
	ts, err := sh.c.ListTables(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(sh.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "table\trows\tbytes")
	for _, t := range ts {
		fmt.Fprintf(tw, "%s\t%d\t%d\n", t.GetName(), t.GetRows(), t.GetBytes())
	}
	return tw.Flush()
}

func (sh *session) describe(ctx context.Context, p *parser) error {
	name, err := p.lastName("a table name")
	if err != nil {
		return err
	}
	delete(sh.schemas, name)
	t, err := sh.schema(ctx, name)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(sh.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "column\ttype\tnull\tmax length")
	for _, c := range t.GetColumns() {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%d\n", c.GetName(), typeName(c.GetType()), c.GetNullable(), c.GetMaxLength())
	}
	fmt.Fprintln(tw, "\nindex\tcolumns\tunique\tkind")
	fmt.Fprintf(tw, "primary\t%s\ttrue\t%s\n", strings.Join(t.GetPrimaryKey(), ", "), kindName(t.GetPrimaryKind()))
	for _, ix := range t.GetIndexes() {
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", ix.GetName(), strings.Join(ix.GetColumns(), ", "), ix.GetUnique(), kindName(ix.GetKind()))
	}
	return tw.Flush()
}

func kindName(k pb.IndexKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "INDEX_KIND_"))
}

// printRows prints rows as an aligned table under the column names.
func (sh *session) printRows(t *pb.Table, rows []client.Row) error {
	tw := tabwriter.NewWriter(sh.out, 0, 4, 2, ' ', 0)
	for i, c := range t.GetColumns() {
		if i > 0 {
			fmt.Fprint(tw, "\t")
		}
		fmt.Fprint(tw, c.GetName())
	}
	fmt.Fprintln(tw)
	for _, r := range rows {
		for i, v := range r {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, formatValue(v))
		}
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	noun := "rows"
	if len(rows) == 1 {
		noun = "row"
	}
	_, err := fmt.Fprintf(sh.out, "(%d %s)\n", len(rows), noun)
	return err
}
