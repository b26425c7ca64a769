# One image with every mcplane binary; docker-compose.yml picks the binary per service.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
# `--build-arg FEATURES=mcplane-shared/mimalloc` trades idle memory for throughput (docs/BENCHMARKS.md).
ARG FEATURES=""
RUN cargo build --profile dist --locked --bins ${FEATURES:+--features "$FEATURES"} \
 && mkdir /out \
 && cp target/dist/mcplane target/dist/mcplane-* /out/ \
 && rm -f /out/*.d

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home /data mcplane \
 && mkdir -p /data /keys && chown mcplane /data /keys
COPY --from=build /out/ /usr/local/bin/
COPY examples/ /etc/mcplane/
USER mcplane
ENV MCPLANE_DATA_DIR=/data
WORKDIR /data
