# syntax=docker/dockerfile:1
#
# mmdb's image: a static mmdbd on distroless, run as a non-root user, with
# a volume for the data dir. docs/operations.md, "Running in Docker":
#
#   docker build -t mmdb .
#   docker run -d --name mmdb -p 7700:7700 -p 9700:9700 -v mmdb-data:/var/lib/mmdb mmdb
#   docker exec mmdb /usr/local/bin/mmdbd status -config /etc/mmdb/mmdb.hcl
#
# cmd/mmdbd/dockerfile_test.go checks what this file promises; CI cannot
# run Docker, but it runs the build stage's script (.ci/run).

# Build: the script CI runs builds the static binary, checks it and
# smoke-tests it. The repository's .git comes along (see .dockerignore),
# so the binary carries its VCS revision, which mmdbd status shows.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN scripts/build-static.sh /out/mmdbd
# An empty data dir, for the final stage to own as its user.
RUN mkdir -p /out/data

# Run: no shell, no package manager; user nonroot (65532).
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/mmdbd /usr/local/bin/mmdbd
COPY --from=build --chown=65532:65532 /out/data/ /var/lib/mmdb/
COPY docs/examples/docker.hcl /etc/mmdb/mmdb.hcl
USER 65532:65532
# The data dir: checkpoint images, the redo log, EPOCHS, diverged-*.jsonl.
VOLUME ["/var/lib/mmdb"]
# gRPC (clients, peers, admin commands) and Prometheus metrics.
EXPOSE 7700 9700
# SIGTERM shuts the node down gracefully, with a checkpoint: give it time
# (docker stop -t 60). SIGHUP (docker kill -s HUP) re-reads the role.
STOPSIGNAL SIGTERM
# A node loads its newest image and replays the log before it serves:
# raise --start-period for a large database.
HEALTHCHECK --interval=10s --timeout=6s --start-period=2m --retries=3 \
	CMD ["/usr/local/bin/mmdbd", "status", "-config", "/etc/mmdb/mmdb.hcl"]
ENTRYPOINT ["/usr/local/bin/mmdbd"]
CMD ["serve", "-config", "/etc/mmdb/mmdb.hcl"]
