# syntax=docker/dockerfile:1
# The `statuslist` binary; the image runs `statuslist operator` or `statuslist worker`.
FROM rust:1.95-bookworm AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends cmake clang && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p statuslist-cli && cp target/release/statuslist /statuslist

# Distroless: glibc and CA certificates (for issuer JWKS over https), no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /statuslist /usr/local/bin/statuslist
USER 65532:65532
EXPOSE 8080 8081 9090
ENTRYPOINT ["/usr/local/bin/statuslist"]
CMD ["worker"]
