package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/server"
)

// errUsage reports bad flags and errHelp a request for help; the flag
// package has printed the text.
var (
	errUsage = errors.New("usage")
	errHelp  = errors.New("help")
)

// parseFlags parses a command's flags.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %q\n", fs.Args())
		return errUsage
	}
	return nil
}

// configFlags registers -config and a flag for every configuration key
// on fs; the function it returns loads the configuration once fs is
// parsed.
func configFlags(fs *flag.FlagSet) func() (*conf.Config, error) {
	path := fs.String("config", "", "an HCL configuration `file`; flags and MMDB_* variables override it")
	flags := conf.RegisterFlags(fs)
	return func() (*conf.Config, error) { return conf.Load(*path, os.Environ(), flags) }
}

// nodeLogger is the logger of a node's configuration.
func nodeLogger(cfg *conf.Config, stderr io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "mmdbd",
		Level:      hclog.LevelFromString(cfg.LogLevel),
		JSONFormat: cfg.LogFormat == "json",
		Output:     stderr,
	})
}

// restartRole carries the role a node restarts in (reexec) to the new
// process, which takes it in place of its first configuration's role
// only: a -role flag would override the file at every SIGHUP too, and
// the node could never again be switched to primary by its file.
const restartRole = "MMDBD_RESTART_ROLE"

// reexec replaces the process with a new run of the same command, as a
// standby or propagator (role, in restartRole: the node restarts to catch
// up with a primary) and without -from-image (the data dir holds a
// database now).
func reexec(role string) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	var args []string
	for i := 0; i < len(os.Args); i++ {
		a := os.Args[i]
		switch {
		case a == "-from-image" || a == "--from-image":
			i++ // and its value
			continue
		case strings.HasPrefix(a, "-from-image=") || strings.HasPrefix(a, "--from-image="):
			continue
		}
		args = append(args, a)
	}
	if err := syscall.Exec(self, args, append(os.Environ(), restartRole+"="+role)); err != nil {
		return fmt.Errorf("restart %s: %w", self, err)
	}
	return nil // not reached: Exec does not return when it works
}

// serve runs a node until SIGTERM or SIGINT, then shuts it down
// gracefully. SIGHUP reads the configuration again and takes its peers,
// sync settings and role, and reads the certificate, CA and token files
// again (reload); one that comes while the node starts is taken once it
// serves. The other keys need a restart (a warning names those the file
// changed); a bad file changes nothing. A
// node that asks to be restarted (its log is to be cut) is shut down and
// this process replaced by a new mmdbd with the same arguments (reexec).
func serve(args []string, stderr io.Writer) error {
	// Before the start, which may take minutes (a replay, an image over
	// the network): SIGHUP's default action would end the process.
	sigs := notifySignals()
	defer sigs.close()
	fs := flag.NewFlagSet("mmdbd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fromImage := fs.String("from-image", "", "start from this image `file` (mmdbd image fetch): loaded on a diskless node, installed as the first checkpoint in a data_dir without a database")
	load := configFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	role := cfg.Role // as the file last said
	cfg.FromImage = *fromImage
	if r, ok := os.LookupEnv(restartRole); ok {
		if err := os.Unsetenv(restartRole); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		cfg.Role = r
	}
	if cfg.FromImage != "" || cfg.Role != role {
		if err := cfg.Validate(); err != nil {
			return err
		}
	}
	logger := nodeLogger(cfg, stderr)
	if cfg.Role != role {
		logger.Info("restarted in the role the restart asked for; SIGHUP takes the file's role once the file changes it", "role", cfg.Role, "file-role", role)
	}
	srv, err := server.New(cfg, logger)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return errors.Join(fmt.Errorf("listen on %s (%s): %w", cfg.Listen, cfg.Origin("listen"), err), srv.Shutdown(context.Background()))
	}
	// SIGTERM and SIGINT keep their default action during the start: a
	// node stopped then has served nothing, and its data dir recovers
	// as after a crash.
	sigs.notifyStop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
wait:
	for {
		select {
		case why := <-srv.Restarts():
			logger.Warn("restarting", "why", why)
			ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
			err := errors.Join(srv.Shutdown(ctx), <-served)
			cancel()
			if err != nil {
				return err
			}
			as := conf.RoleStandby
			if srv.Role() == conf.RolePropagator {
				as = conf.RolePropagator
			}
			return reexec(as)
		case <-sigs.hup:
			reload(srv, cfg, load, &role, logger)
		case sig := <-sigs.stop:
			logger.Info("shutting down", "signal", sig.String(), "timeout", cfg.ShutdownTimeout)
			break wait
		case err := <-served:
			return errors.Join(err, srv.Shutdown(context.Background()))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	return errors.Join(srv.Shutdown(ctx), <-served)
}

// signals are the signals serve acts on, each kind on a channel of its
// own: the signal package drops a signal whose channel is full, so a
// SIGTERM sharing a one-slot channel with a SIGHUP that waits there (a
// second SIGHUP while a reload runs) would be lost, and the node would
// not stop. SIGHUPs that wait together are one reload.
type signals struct {
	hup  chan os.Signal // SIGHUP
	stop chan os.Signal // SIGTERM and SIGINT, once notifyStop is called
}

// notifySignals starts catching SIGHUP.
func notifySignals() *signals {
	s := &signals{hup: make(chan os.Signal, 1), stop: make(chan os.Signal, 1)}
	signal.Notify(s.hup, syscall.SIGHUP)
	return s
}

// notifyStop starts catching SIGTERM and SIGINT, which end the process
// until then.
func (s *signals) notifyStop() { signal.Notify(s.stop, syscall.SIGTERM, syscall.SIGINT) }

// close stops catching the signals.
func (s *signals) close() {
	signal.Stop(s.hup)
	signal.Stop(s.stop)
}
