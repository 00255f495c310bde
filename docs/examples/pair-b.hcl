# A failover pair, node B (mmdb-b): the standby of A (pair-a.hcl). It is a
# propagator, a standby that also relays what it has applied to its other
# peers: here the diskless reader R (diskless.hcl). Once promoted it is
# the primary and ships to all its peers, A and R; only A's
# acknowledgement counts towards sync_quorum (sync_standbys). See
# pair-a.hcl for the host names and certificates, and docs/operations.md,
# "Running a failover pair".
#
#   mmdbd serve -config /etc/mmdb/mmdb.hcl

node     = "mmdb-b"
listen   = "0.0.0.0:7700"
data_dir = "/var/lib/mmdb"

# Metrics are plain HTTP without authentication, and tell whoever reaches
# them the tables and peers: loopback here, or a private interface's
# address that only Prometheus reaches (docs/configuration.md).
metrics_addr = "127.0.0.1:9700"
log_format   = "json"

# As A: a standby logs what it applies at its own durability, and these
# hold when it is promoted.
durability       = "fsync-log"
durability_floor = "mmap-log"

role            = "propagator"
sync_mode       = "applied-ack"
sync_quorum     = 1
sync_timeout    = "2s"
on_sync_timeout = "degrade"
# Once B is the primary, A (not the diskless reader R) must hold every
# acknowledged commit.
sync_standbys   = ["mmdb-a"]

peer "mmdb-a" {
  addr = "mmdb-a.db.internal:7700"
}
peer "mmdb-r1" {
  addr = "mmdb-r1.db.internal:7700"
}

tls {
  cert_file   = "/etc/mmdb/node.pem" # names mmdb-b and mmdb-b.db.internal; server and client auth
  key_file    = "/etc/mmdb/node-key.pem"
  ca_file     = "/etc/mmdb/ca.pem"
  client_auth = false
  admin_names = ["ops"]
}
# auth_token_file = "/etc/mmdb/tokens"
