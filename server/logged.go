package server

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/mmdb/mmdb/conf"
	"github.com/mmdb/mmdb/durability"
	redolog "github.com/mmdb/mmdb/logging"
	"github.com/mmdb/mmdb/logging/vfs"
)

// loggedFile, in a data dir, says that the node keeps a redo log. A log
// never releases its last segment, so a start that finds none where the
// file says a log is (a disk not mounted, log_channels pointing
// elsewhere) would lose every commit after the newest image, or all of
// them without one: it refuses (checkLogged).
const loggedFile = "LOGGED"

// checkLogged refuses a start of cfg's node whose log directories hold no
// segment when its data dir says it keeps a log.
func checkLogged(cfg *conf.Config) error {
	name := filepath.Join(cfg.DataDir, loggedFile)
	if _, err := os.Stat(name); errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	logged, err := redolog.HasSegments(vfs.Default, cfg.LogDirs())
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if logged {
		return nil
	}
	return fmt.Errorf("server: data_dir %s says the node keeps a redo log, and no log segment is in %s: "+
		"starting without it would lose every commit after the newest checkpoint image. Mount the log's disks, or point log_channels at them; "+
		"if the log is lost for good, remove %s to start from the image alone", cfg.DataDir, strings.Join(cfg.LogDirs(), ", "), name)
}

// keepLogged records, once the store is open, whether cfg's node keeps a
// log (at level): a no-log node's next start needs none.
func keepLogged(cfg *conf.Config, level durability.Level) error {
	name := filepath.Join(cfg.DataDir, loggedFile)
	_, err := os.Stat(name)
	switch {
	case level == durability.NoLog && err == nil:
		err = vfs.RemoveDurable(vfs.Default, name)
	case level != durability.NoLog && errors.Is(err, os.ErrNotExist):
		err = vfs.WriteFile(vfs.Default, name, []byte("the node keeps a redo log: see docs/operations.md\n"))
	case errors.Is(err, os.ErrNotExist):
		err = nil
	}
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	return nil
}
