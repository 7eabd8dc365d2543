# Build stage: the release binary, linked against glibc only.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY testserver ./testserver
COPY examples ./examples
COPY benches ./benches
RUN cargo build --release --locked --bin hashroll \
    && install -D -m 0755 target/release/hashroll /out/hashroll

# Runtime stage: distroless (glibc, CA certificates, no shell), non-root, read-only root file system works:
# hashroll writes nothing to disk.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/hashroll /usr/local/bin/hashroll
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/hashroll"]
