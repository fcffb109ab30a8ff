# syntax=docker/dockerfile:1
# The LogStream operator: reconciles LogPipelines into RabbitMQ topology, worker Deployments and status.
#
# Build from the repository root: docker build -f images/operator.Dockerfile -t logstream-operator:dev .
#
# Runtime: distroless/cc (glibc, libgcc, CA certificates, no shell, no package manager) rather
# than a musl static binary on scratch: the TLS stack (rustls on aws-lc-rs) builds as is for
# glibc, musl's allocator is slow under the many small allocations of a busy async process,
# and the image stays small (about 25 MB plus the binary) with no shell in it. UID 65532 is distroless's
# nonroot user, the one the worker Deployments and the chart run as. The `operator` cargo
# profile optimises for size: the memory benchmark (make bench-operator) measures this build.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile operator --locked -p logstream-operator --bin logstream-operator \
    && install -D -m 0755 target/operator/logstream-operator /out/logstream-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/logstream-operator /usr/local/bin/logstream-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/logstream-operator"]
