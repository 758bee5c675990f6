# syntax=docker/dockerfile:1
#
# One image per service, built from the repository root (the services
# replace the shared module with ../shared, so the context must hold all
# three modules):
#
#   docker build --build-arg SERVICE=ingest  -t segment-ingest  .
#   docker build --build-arg SERVICE=deliver -t segment-deliver .
#
# The build ignores go.work (GOWORK=off), as each module must build alone,
# and is reproducible: pinned toolchain line, no cgo, -trimpath, no VCS
# stamping. The final image is distroless static, non-root, with no shell.

ARG GO_IMAGE=golang:1.26

FROM ${GO_IMAGE} AS build
# SERVICE chooses the module to build: ingest or deliver.
ARG SERVICE
RUN case "${SERVICE}" in \
      ingest|deliver) ;; \
      *) echo "build with --build-arg SERVICE=ingest or SERVICE=deliver (got '${SERVICE}')" >&2; exit 1 ;; \
    esac
ENV CGO_ENABLED=0 GOWORK=off GOFLAGS=-buildvcs=false
WORKDIR /src

# Modules first, so the download layer is cached until a go.mod changes.
COPY shared/go.mod shared/go.sum ./shared/
COPY ${SERVICE}/go.mod ${SERVICE}/go.sum ./${SERVICE}/
RUN cd "${SERVICE}" && go mod download

COPY shared/ ./shared/
COPY ${SERVICE}/ ./${SERVICE}/
RUN cd "${SERVICE}" && go build -trimpath -ldflags="-s -w" -o /out/service .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/service /service
USER nonroot:nonroot
# Cloud Run sets PORT; SIGTERM goes straight to the binary (PID 1), which
# drains and exits within 8 s.
ENTRYPOINT ["/service"]
