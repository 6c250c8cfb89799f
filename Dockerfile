# deployd's image: a static binary on distroless, run as a non-root numeric user.
# make image builds it (needs Docker; see README). Tests build the same recipe without
# Docker (internal/imagebuild reads this file): keep it the one recipe.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd ./cmd
COPY internal ./internal
COPY pkg ./pkg
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X github.com/deployd/deployd/internal/version.Version=${VERSION} -X github.com/deployd/deployd/internal/version.Commit=${COMMIT}" \
    -o /out/deployd ./cmd/deployd

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/deployd /deployd
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/deployd"]
