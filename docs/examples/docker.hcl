# The default configuration of the mmdb Docker image: the Dockerfile copies
# this file to /etc/mmdb/mmdb.hcl, which the image's CMD (`mmdbd serve
# -config /etc/mmdb/mmdb.hcl`) and HEALTHCHECK (`mmdbd status -config
# /etc/mmdb/mmdb.hcl`) read. A single node, a primary.
#
# Change single keys with MMDB_* variables (docker run -e
# MMDB_NODE=mmdb-a), or mount a directory of your own over /etc/mmdb,
# holding mmdb.hcl and its TLS files
# (docker run -v /srv/mmdb/etc:/etc/mmdb:ro): a file with a tls block for
# anything but a private network, since this one listens on every
# interface without TLS. Mount the directory, not the file alone:
# editors replace a file, and a single-file mount keeps showing the old
# one, so a SIGHUP would not see the change. docs/operations.md,
# "Running in Docker".

node     = "mmdb"
listen   = "0.0.0.0:7700"  # gRPC: clients, peers and admin commands (EXPOSE 7700)
data_dir = "/var/lib/mmdb" # the image's VOLUME, owned by its user

# Prometheus metrics, plain HTTP at /metrics (EXPOSE 9700), without
# authentication: they tell whoever reaches them the tables and peers, so
# publish port 9700 only to the network Prometheus scrapes from.
metrics_addr = "0.0.0.0:9700"

log_level  = "info"
log_format = "json" # one JSON object per line, for log collectors

# A commit returns once it is on disk (fdatasync, group commit): neither a
# container restart nor a host crash loses an acknowledged commit. A
# transaction may ask for less, down to durability_floor. See "Choosing
# durability and sync mode" in docs/operations.md for what it costs.
durability       = "fsync-log"
durability_floor = "no-log"

role = "primary"
