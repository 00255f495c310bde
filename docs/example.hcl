# An mmdb node's configuration (HCL). Every key is optional; the values
# below are the embedded defaults unless a comment says otherwise. Each key
# is also a flag (data_dir -> -data-dir) and an environment variable
# (MMDB_DATA_DIR); flags override variables, which override this file.
# docs/configuration.md documents every key.
#
#   mmdbd serve -config docs/example.hcl

node     = "mmdb"
listen   = "127.0.0.1:7700"
data_dir = "./mmdb-data"

log_level  = "info"
log_format = "text"

# Limits on what a request may ask for.
max_message_bytes     = 4194304
max_scan_rows         = 10000
max_value_bytes       = 32768
max_open_transactions = 10000
max_tx_bytes          = 67108864
tx_idle_timeout       = "30s"
shutdown_timeout      = "10s"

# Prometheus metrics at http://127.0.0.1:9700/metrics (plain HTTP, no
# authentication: keep it on loopback or a private interface).
# metrics_addr = "127.0.0.1:9700"

# Durability and the redo log.
durability         = "no-log"
durability_floor   = "no-log"
# log_channels     = ["/disk1/mmdb-log", "/disk2/mmdb-log"]
log_segment_bytes  = 67108864
mmap_sync_interval = "1s"
recovery_ignore_corruption = false

# Checkpoints.
checkpoint_interval  = "5m"
checkpoint_log_bytes = 1073741824
log_retention_bytes  = 4294967296
# bootstrap_from     = "10.0.0.1:7700"

# Replication. SIGHUP reads this file again and takes the role, the
# peers and the five sync_* settings; the rest needs a restart.
role            = "primary"
sync_mode       = "async"
sync_quorum     = 1
sync_standbys   = [] # the standbys that count towards sync_quorum; [] for all
sync_timeout    = "2s"
on_sync_timeout = "degrade"
# peer "standby-1" {
#   addr = "10.0.0.2:7700"
# }

# Security (docs/configuration.md#security).
# tls {
#   cert_file   = "/etc/mmdb/node.pem"
#   key_file    = "/etc/mmdb/node-key.pem"
#   ca_file     = "/etc/mmdb/ca.pem"
#   client_auth = false
#   admin_names = ["ops"]
# }
# auth_token_file = "/etc/mmdb/tokens"
