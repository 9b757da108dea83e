# syntax=docker/dockerfile:1
#
# Hallmark from source: one build stage with the Rust toolchain, two small
# runtime images.
#
#   docker build --target server -t hallmark-server .
#   docker build --target agent  -t hallmark-agent  .
#
# No system protoc is needed (the .proto files are compiled by protox, in
# Rust); ring needs a C compiler, which the toolchain image has.

FROM rust:1.88-bookworm AS build
WORKDIR /src
COPY . .
# --locked: exactly the dependency versions in Cargo.lock.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p hallmark-server -p hallmark-agent \
 && install -D -m 0755 target/release/hallmark-server /out/hallmark-server \
 && install -D -m 0755 target/release/hallmark-agent /out/hallmark-agent

# The issuer: distroless (glibc, CA certificates, no shell), as the
# image's unprivileged user 65532. It needs no capability.
FROM gcr.io/distroless/cc-debian12:nonroot AS server
COPY --from=build /out/hallmark-server /usr/local/bin/hallmark-server
USER 65532:65532
# 8081: node API (gRPC over TLS). 9090: /metrics, /live, /ready when
# [metrics] address is set. The admin API is a Unix socket inside the pod.
EXPOSE 8081 9090
ENTRYPOINT ["/usr/local/bin/hallmark-server"]
CMD ["run", "--config", "/etc/hallmark/server.toml", "--log-format", "json"]

# The node agent runs as root with only CAP_SYS_PTRACE and
# CAP_DAC_READ_SEARCH (set by the DaemonSet): it measures other users'
# processes through /proc. See deploy/kubernetes/agent-daemonset.yaml.
FROM gcr.io/distroless/cc-debian12 AS agent
COPY --from=build /out/hallmark-agent /usr/local/bin/hallmark-agent
USER 0:0
EXPOSE 9091
ENTRYPOINT ["/usr/local/bin/hallmark-agent"]
CMD ["run", "--config", "/etc/hallmark/agent.toml", "--log-format", "json"]
