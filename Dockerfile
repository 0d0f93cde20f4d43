# The controller image: static (musl) conpaas-controller and conpaas-agent on a distroless base.
# The agent sits beside the controller because the `local` cloud starts VMs as agent processes.
#   docker build -t <registry>/conpaas-controller:0.1.0 .
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev gcc g++ make cmake perl
WORKDIR /src
COPY . .
# Alpine's Rust targets musl: the binaries are static. Caches keep rebuilds short.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p conpaas-controller -p conpaas-agent --features conpaas-controller/ec2,conpaas-controller/opennebula \
 && mkdir -p /out \
 && cp target/release/conpaas-controller target/release/conpaas-agent /out/

# Alpine rather than distroless: the controller runs `git` for Services with a git source.
FROM alpine:3.22
RUN apk add --no-cache git ca-certificates
COPY --from=build /out/conpaas-controller /out/conpaas-agent /usr/local/bin/
ENV CONPAAS_AGENT_BINARY=/usr/local/bin/conpaas-agent \
    CONPAAS_STATE_DIR=/var/lib/conpaas
USER 65532:65532
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/conpaas-controller"]
