# Build: the whole workspace in release mode; only the wxbind binary is kept.
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libpq-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p wxbind

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 wxbind
COPY --from=build /src/target/release/wxbind /usr/local/bin/wxbind
USER wxbind
ENV WXBIND_LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=5 CMD curl -fsS http://127.0.0.1:8080/api/ready || exit 1
ENTRYPOINT ["wxbind"]
CMD ["serve"]
