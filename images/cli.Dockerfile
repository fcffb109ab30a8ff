# syntax=docker/dockerfile:1
# The LogStream command line (produce, dlq, status); the e2e suite runs `logstream produce` and `logstream dlq list` from it in Jobs.
#
# Build from the repository root: docker build -f images/cli.Dockerfile -t logstream-cli:dev .
#
# Runtime: distroless/cc (glibc, libgcc, CA certificates, no shell, no package manager) rather
# than a musl static binary on scratch: the TLS stack (rustls on aws-lc-rs) builds as is for
# glibc, musl's allocator is slow under the many small allocations of a busy async process,
# and the image stays small (about 25 MB plus the binary) with no shell in it. UID 65532 is distroless's
# nonroot user, the one the worker Deployments and the chart run as.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p logstream --bin logstream \
    && install -D -m 0755 target/release/logstream /out/logstream

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/logstream /usr/local/bin/logstream
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/logstream"]
