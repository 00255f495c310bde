# A failover pair, node A (mmdb-a): the primary. Its partner B (pair-b.hcl)
# is its standby, and relays the log to the diskless reader R
# (diskless.hcl). The three files differ in node, role, peers,
# sync_standbys (each of A and B names the other) and, for R, durability
# and data_dir. docs/operations.md, "Running a failover pair",
# shows how to start, check, switch over and fail over.
#
#   mmdbd serve -config /etc/mmdb/mmdb.hcl
#
# Host names: each node listens on every interface and advertises
# <its hostname>:7700 to its standbys, which name that address in the
# errors of writes sent to them and fetch images from it. The hostnames
# mmdb-a.db.internal and mmdb-b.db.internal must resolve for peers and
# clients, and each node's certificate must name the node (mmdb-a) and the
# host names clients dial.

node     = "mmdb-a"
listen   = "0.0.0.0:7700"
data_dir = "/var/lib/mmdb"

# Metrics are plain HTTP without authentication, and tell whoever reaches
# them the tables and peers: loopback here, or a private interface's
# address that only Prometheus reaches (docs/configuration.md).
metrics_addr = "127.0.0.1:9700"
log_format   = "json"

# Every commit is on this node's disk (fdatasync, group commit) before it
# returns. A transaction may ask for mmap-log (a bulk load, say), never
# for less.
durability       = "fsync-log"
durability_floor = "mmap-log"
# One channel per disk, if the node has several:
# log_channels = ["/disk1/mmdb-log", "/disk2/mmdb-log"]

# ... and applied on the standby, visible to its readers: a failover to B
# loses no acknowledged commit. A standby that does not answer within
# sync_timeout degrades the pair (commits return, flagged degraded, until
# it has caught up); "block" would make them wait for it instead. The
# sync settings, like the role, change with SIGHUP: to go async while B
# is down for maintenance, set sync_mode = "async" here and send SIGHUP.
role            = "primary"
sync_mode       = "applied-ack"
sync_quorum     = 1
sync_timeout    = "2s"
on_sync_timeout = "degrade"
# Only B's acknowledgement counts: B is the node a failover promotes, so
# every acknowledged commit must be on it. (B's file names A.)
sync_standbys   = ["mmdb-b"]

# A ships to B only; R follows B.
peer "mmdb-b" {
  addr = "mmdb-b.db.internal:7700"
}

tls {
  cert_file   = "/etc/mmdb/node.pem" # names mmdb-a and mmdb-a.db.internal; server and client auth
  key_file    = "/etc/mmdb/node-key.pem"
  ca_file     = "/etc/mmdb/ca.pem" # peers and admins must present a certificate of this CA
  client_auth = false              # true: every client must present one too
  admin_names = ["ops"]            # who else may run admin commands and fetch images
}
# Bearer tokens for clients ("name token" lines); needs the tls block's
# cert_file and ca_file:
# auth_token_file = "/etc/mmdb/tokens"
