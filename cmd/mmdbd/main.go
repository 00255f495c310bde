// Command mmdbd is mmdb's one binary: it runs a node (serve) and is the
// client tool (status, checkpoint, promote, demote, audit, image, shell,
// bench).
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

const usage = `usage: mmdbd <command> [flags]

commands:
  serve       run a node (mmdbd serve -h lists every configuration flag)
  status      show a node's role, LSNs and tables
  checkpoint  write a checkpoint image on a node now
  promote     make a standby the primary (a new epoch)
  demote      make a primary a standby
  audit       compare a standby's tables with its primary's (-repair: fix them)
  image       fetch a node's image to a file, restore or verify one
  shell       an interactive shell; -c "statements", or a script on stdin, runs
              them and exits, 1 at the first that fails
  bench       measure a workload (tatp, kv, ping) in-process or over gRPC
  help        show this text

Run "mmdbd <command> -h" for a command's flags.
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run runs one command and returns the process's exit code.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	var err error
	switch cmd {
	case "serve":
		err = serve(rest, stderr)
	case "status":
		err = status(rest, stdout, stderr)
	case "checkpoint":
		err = checkpointCmd(rest, stdout, stderr)
	case "promote":
		err = promoteCmd(rest, stdout, stderr)
	case "demote":
		err = demoteCmd(rest, stdout, stderr)
	case "audit":
		err = audit(rest, stdout, stderr)
	case "image":
		err = imageCmd(rest, stdout, stderr)
	case "shell":
		err = shell(rest, stdin, stdout, stderr)
	case "bench":
		err = bench(rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		if _, err := fmt.Fprint(stdout, usage); err != nil {
			fmt.Fprintf(stderr, "mmdbd: print the usage: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "mmdbd: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		switch {
		case errors.Is(err, errHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		}
		fmt.Fprintf(stderr, "mmdbd %s: %v\n", cmd, err)
		return 1
	}
	return 0
}
