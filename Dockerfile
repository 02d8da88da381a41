# syntax=docker/dockerfile:1
# A static binary on a distroless base, running as non-root.
#   docker build -t spendchecker .
#   docker run --rm -e SPENDCHECKER_MONGO_URI=mongodb://... spendchecker
FROM golang:1.26-bookworm AS build
WORKDIR /src
# The rotator is its own module (rotation/), which go.mod replaces with
# the folder: both go.mod files are needed to download.
COPY go.mod go.sum go.work go.work.sum ./
COPY rotation/go.mod rotation/go.sum ./rotation/
RUN go mod download
COPY . .
ARG VERSION=dev
# CGO_ENABLED=0: no libc at run time. The embedded store is imported only
# by tests and the demo, so it is not in this binary.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/spendchecker/spendchecker/cmd/spendchecker/cli.Version=${VERSION}" \
      -o /out/spendchecker ./cmd/spendchecker

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/spendchecker /usr/local/bin/spendchecker
USER nonroot:nonroot
# Listen on all interfaces so Prometheus can scrape the container; the
# health check probes it on loopback.
ENV SPENDCHECKER_LISTEN=:9090 \
    SPENDCHECKER_LOG_FORMAT=json
EXPOSE 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/spendchecker", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/spendchecker"]
