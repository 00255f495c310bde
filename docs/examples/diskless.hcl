# A diskless reader (mmdb-r1) behind the failover pair of pair-a.hcl and
# pair-b.hcl: no data dir, no log. At every start it loads B's image over
# the network (bootstrap_from), then follows the log B relays (or ships,
# once B is the primary). It serves reads and refuses writes, naming the
# primary. What it holds is gone when it stops; the next start loads a new
# image. docs/operations.md, "A diskless node".
#
#   mmdbd serve -config /etc/mmdb/mmdb.hcl

node     = "mmdb-r1"
listen   = "0.0.0.0:7700"
data_dir = "" # diskless: needs durability no-log

# Metrics are plain HTTP without authentication, and tell whoever reaches
# them the tables and peers: loopback here, or a private interface's
# address that only Prometheus reaches (docs/configuration.md).
metrics_addr = "127.0.0.1:9700"
log_format   = "json"

durability       = "no-log"
durability_floor = "no-log"

role           = "standby"
bootstrap_from = "mmdb-b.db.internal:7700" # B serves images, A is spared

# It takes log only from its peers. B lists it as a peer too; A does not:
# while A is the primary, B relays the log to it. Neither counts its
# acknowledgements (sync_standbys names only the partner).
peer "mmdb-b" {
  addr = "mmdb-b.db.internal:7700"
}

tls {
  cert_file   = "/etc/mmdb/node.pem" # names mmdb-r1 and mmdb-r1.db.internal
  key_file    = "/etc/mmdb/node-key.pem"
  ca_file     = "/etc/mmdb/ca.pem"
  client_auth = false
  admin_names = ["ops"]
}
