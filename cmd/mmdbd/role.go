package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/mmdb/mmdb/conf"
	pb "github.com/mmdb/mmdb/proto/mmdb/v1"
	"github.com/mmdb/mmdb/server"
)

// promoteCmd makes a standby the primary.
func promoteCmd(args []string, stdout, stderr io.Writer) error {
	return adminCall("promote", args, stderr, time.Minute, nil, func(ctx context.Context, addr string, admin pb.AdminServiceClient) error {
		resp, err := admin.Promote(ctx, &pb.PromoteRequest{})
		if err != nil {
			return fmt.Errorf("promote %s: %w", addr, err)
		}
		if resp.GetAlready() {
			_, err = fmt.Fprintf(stdout, "%s is already the primary, at epoch %d\n", addr, resp.GetEpoch())
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s is the primary: epoch %d starts at LSN %d\n", addr, resp.GetEpoch(), resp.GetStartLsn())
		return err
	})
}

// demoteCmd makes a primary a standby.
func demoteCmd(args []string, stdout, stderr io.Writer) error {
	return adminCall("demote", args, stderr, time.Minute, nil, func(ctx context.Context, addr string, admin pb.AdminServiceClient) error {
		resp, err := admin.Demote(ctx, &pb.DemoteRequest{})
		if err != nil {
			return fmt.Errorf("demote %s: %w", addr, err)
		}
		state := "is a standby now"
		if resp.GetAlready() {
			state = "is already a standby"
		}
		_, err = fmt.Fprintf(stdout, "%s %s, at epoch %d\n", addr, state, resp.GetEpoch())
		return err
	})
}

// reload reads the configuration again (SIGHUP), and the certificate and
// token files the node runs with (running, its configuration at start);
// takes its peers, then its sync settings (sync_mode, sync_quorum,
// sync_standbys, sync_timeout, on_sync_timeout), which may name the new
// peers; and takes its role if the file changed it since it was last
// read (*role): a node that stepped down, or was promoted or demoted
// over AdminService, keeps its role across a SIGHUP that changes
// nothing. A file that load refuses, as a start would refuse it, or
// that renames the node, changes nothing. The other keys the file changes are named in a
// warning: they need a restart (a tls block or token file added, or
// moved to other files, among them).
func reload(srv *server.Server, running *conf.Config, load func() (*conf.Config, error), role *string, logger hclog.Logger) {
	cfg, err := load()
	if err != nil {
		logger.Error("SIGHUP: the configuration does not load, or the node cannot take it; nothing changed", "error", err)
		return
	}
	if cfg.Node != running.Node {
		// The file's peers and sync_standbys were checked against the
		// new name, which the node does not run under until a restart.
		logger.Error("SIGHUP: the file renames the node, which only a restart takes; nothing changed", "node", running.Node, "file-node", cfg.Node, "at", cfg.Origin("node"))
		return
	}
	if keys := running.RestartOnly(cfg); keys != nil {
		logger.Warn("SIGHUP: the file changes keys that only a restart takes; until then the node keeps the values it started with", "keys", strings.Join(keys, ", "))
	}
	if files := credentialFiles(running); files != nil {
		if err := srv.ReloadCredentials(); err != nil {
			logger.Error("SIGHUP: could not read the certificate, CA or token files again; the ones loaded before stay in use", "error", err)
		} else {
			logger.Info("SIGHUP: read the certificate, CA and token files again", "files", strings.Join(files, ","))
		}
	}
	changed, added, removed, err := srv.SetPeers(cfg)
	switch {
	case err != nil && !changed:
		logger.Error("SIGHUP: could not take the peers; the ones before stay in use", "error", err)
	case changed:
		var peers []string
		for _, p := range cfg.Peers {
			peers = append(peers, p.Name+"="+p.Addr)
		}
		logger.Info("SIGHUP: took the peers", "peers", strings.Join(peers, ","), "ships-to-new", strings.Join(added, ","), "ships-no-more-to", strings.Join(removed, ","))
		if err != nil {
			logger.Error("SIGHUP: could not start shipping to the peers", "error", err)
		}
	}
	if changed, err := srv.SetSync(cfg); err != nil {
		logger.Error("SIGHUP: could not take the sync settings; the ones before stay in use", "error", err)
	} else if changed != nil {
		logger.Info("SIGHUP: took the sync settings", "changed", strings.Join(changed, ","), "sync-mode", cfg.SyncMode,
			"sync-quorum", cfg.SyncQuorum, "sync-standbys", strings.Join(cfg.SyncStandbys, ","), "sync-timeout", cfg.SyncTimeout,
			"on-sync-timeout", cfg.OnSyncTimeout)
	}
	if cfg.Role == *role {
		logger.Info("SIGHUP: the configured role is unchanged", "role", cfg.Role, "node-role", srv.Role())
		return
	}
	logger.Info("SIGHUP: taking the configured role", "role", cfg.Role, "was", srv.Role())
	if err := srv.SetRole(cfg.Role); err != nil {
		logger.Error("SIGHUP: could not take the role", "role", cfg.Role, "error", err)
		return
	}
	*role = cfg.Role
}

// credentialFiles are the files of cfg that SIGHUP reads again: the
// certificate, its key, the CA file and the token file, those set.
func credentialFiles(cfg *conf.Config) []string {
	var files []string
	for _, f := range []string{cfg.TLSCertFile, cfg.TLSKeyFile, cfg.TLSCAFile, cfg.AuthTokenFile} {
		if f != "" {
			files = append(files, f)
		}
	}
	return files
}
