package mmdbv1

// MaxRepairKeys is the most keys one RepairRows call takes: they are one
// transaction, which locks every row it names until it commits.
const MaxRepairKeys = 10000

// MaxDigestBuckets is the most buckets one TableDigest takes.
const MaxDigestBuckets = 1 << 16
