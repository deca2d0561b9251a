# Multi-stage build: a static-ish release binary in a distroless image (no shell, non-root).
FROM rust:1-bookworm AS build
WORKDIR /src
# .dockerignore keeps target/, .venv/ and .git/ out of the context.
COPY . .
# Without the default `dev` feature: the image does not link the dev cluster and demo services.
RUN cargo build --release --locked -p task-proxy --no-default-features \
 && strip target/release/task-proxy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/task-proxy /usr/local/bin/task-proxy
# The original image's path: manifests with `command: ["./server"]` and its flags keep working
# (a command line starting with a flag runs `serve`).
COPY --from=build /src/target/release/task-proxy /server
WORKDIR /
USER 65532:65532
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/task-proxy"]
CMD ["serve", "--help"]
