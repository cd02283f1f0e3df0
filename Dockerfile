# syntax=docker/dockerfile:1
# The `statuslist` binary; the image runs `statuslist operator`, `statuslist worker`
# (and, for development clusters, `statuslist dev-issuer`).
#
# Built for the platform of the builder (kind on an Apple Silicon Mac: linux/arm64), in
# the same Debian release as the runtime image, so the binary's glibc matches. No build
# packages beyond the rust image: aws-lc-sys builds with the image's C compiler (no
# cmake, no clang: bindings are pregenerated for Linux x86_64 and aarch64).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the crate registry and the target directory between builds: a
# rebuild after a source change compiles only the crates that changed. Paths in panic
# messages and logs name the crate, not this build machine; symbols are stripped.
ENV CARGO_PROFILE_RELEASE_STRIP=symbols \
    RUSTFLAGS="--remap-path-prefix=/usr/local/cargo/registry/src=registry --remap-path-prefix=/src=statuslist"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p statuslist-cli && cp target/release/statuslist /statuslist

# Distroless: glibc and CA certificates (for issuer JWKS over https), no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /statuslist /usr/local/bin/statuslist
USER 65532:65532
EXPOSE 8080 8081 8082 9090
ENTRYPOINT ["/usr/local/bin/statuslist"]
CMD ["worker"]
