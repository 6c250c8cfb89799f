# deployd's front door. `make demo` and `make test` are the two commands a newcomer needs.
GO          ?= go
BIN         := bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS     := -X github.com/deployd/deployd/internal/version.Version=$(VERSION) \
               -X github.com/deployd/deployd/internal/version.Commit=$(COMMIT)
STATICCHECK ?= $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2
# Extra flags for go test, e.g. make test TESTFLAGS='-run TestCheck -v'.
TESTFLAGS   ?=
DEMO_LISTEN ?= 127.0.0.1:8080

.PHONY: deps fuzz kind-up kind-down build test demo demo-push cluster lint bench bench-quick bench-go simcluster flux realnode cluster-real cluster-tool image image-tar openapi

## build: the deployd binary, stamped with version and commit, into bin/
## (kustomize's Go-plugin loader left out: deployd never loads plugins, and importing Go's
## plugin package keeps every exported method in a cgo build, 40 MB more mapped code)
build:
	$(GO) build -trimpath -tags kustomize_disable_go_plugin_support -ldflags "$(LDFLAGS)" -o $(BIN)/deployd ./cmd/deployd

## simcluster: build the simulated cluster's binaries once (minutes the first time, then cached)
simcluster:
	@bash hack/simcluster/build.sh >/dev/null

## flux: build Flux's source-controller and kustomize-controller once (bench scenario 11's peer; minutes the first time)
flux:
	@bash hack/flux/build.sh >/dev/null

## realnode: build the real node's parts once (kubelet, kube-proxy, containerd; minutes the first time)
realnode:
	@bash hack/realnode/build.sh >/dev/null

cluster-tool:
	@$(GO) build -o $(BIN)/cluster ./hack/cluster

## deps: the Debian packages the tests need, installed when missing (as root), else named
deps:
	@bash hack/deps.sh

## test: every test, with the race detector, against one shared simulated cluster
test: deps simcluster cluster-tool
	$(BIN)/cluster exec -- $(GO) test -race -count=1 $(TESTFLAGS) ./...
	cd hack/kind && $(GO) test -count=1 ./...

## cluster: start a simulated cluster by hand; prints its kubeconfig; Ctrl-C stops it
cluster: simcluster cluster-tool
	$(BIN)/cluster run

## cluster-real: the same with a real node beside the simulated one (root, Linux); Ctrl-C restores the machine
cluster-real: simcluster realnode cluster-tool
	$(BIN)/cluster run --real-node

## demo: deployd installed from k8s/ on a real node (root, Linux) deploying two sample apps in real
## containers from a local git server; elsewhere, or with DEMO=simulated, deployd on the host
## against a simulated cluster
DEMO ?=
demo: build simcluster
	@$(GO) build -o $(BIN)/deployd-demo ./hack/demo
	DEMO=$(DEMO) DEMO_LISTEN=$(DEMO_LISTEN) $(BIN)/deployd-demo

## demo-push: commit a change to a sample app of the running demo and send the push webhook
demo-push:
	@$(GO) build -o $(BIN)/deployd-demo ./hack/demo
	$(BIN)/deployd-demo push $(APP)

## fuzz: each fuzz target for a fixed number of inputs (about 10 s each on 2 cores); their seeds also
## run in make test. FUZZTIME=200000x (or =30s) sets one budget for all. A count, not a duration, by
## default: with a duration Go's fuzzing coordinator can fail a clean run with "context deadline exceeded"
## when the deadline lands while a worker is busy (go.dev/issue/75804).
FUZZTIME ?=
FUZZMINIMIZE ?= 10s
FUZZ = $(GO) test -run '^$$' -fuzzminimizetime $(FUZZMINIMIZE)
fuzz:
	$(FUZZ) -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),100000x) ./internal/config
	$(FUZZ) -fuzz '^FuzzDelivery$$' -fuzztime $(or $(FUZZTIME),10000x) ./internal/webhook
	$(FUZZ) -fuzz '^FuzzRender$$' -fuzztime $(or $(FUZZTIME),2000x) ./internal/render
	$(FUZZ) -fuzz '^FuzzParams$$' -fuzztime $(or $(FUZZTIME),10000x) ./internal/api
	$(FUZZ) -fuzz '^FuzzFanout$$' -fuzztime $(or $(FUZZTIME),5000x) ./internal/api
	$(FUZZ) -fuzz '^FuzzParseFast$$' -fuzztime $(or $(FUZZTIME),100000x) ./internal/api
	$(FUZZ) -fuzz '^FuzzEscape$$' -fuzztime $(or $(FUZZTIME),5000x) ./internal/checks

## openapi: write the OpenAPI documents into openapi/ and regenerate the Go client in pkg/client
openapi:
	$(GO) run ./hack/openapi openapi
	cd pkg/client && $(GO) run github.com/oapi-codegen/oapi-codegen/v2/cmd/oapi-codegen@v2.8.2 -config oapi-codegen.yaml ../../openapi/openapi-3.0.json

## lint: gofmt, go vet and staticcheck
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd hack/kind && $(GO) vet ./...
	$(STATICCHECK) ./...

## bench: the end-to-end benchmark harness (about 40 minutes, 30 of them side by side with Flux: -only 11; its
## controllers are built on first use), results in bench/RESULTS.md and bench/results/
## BENCHFLAGS passes flags, e.g. make bench BENCHFLAGS='-only 1,2 -runs 5' or '-profile bin/profiles'
BENCHFLAGS ?=
bench: build simcluster
	@command -v wrk >/dev/null || { echo "make bench: installing wrk (Debian) to load the status API"; \
		(apt-get install -y -qq wrk || (apt-get update -qq && apt-get install -y -qq wrk)) >/dev/null; }
	$(GO) run ./hack/bench $(BENCHFLAGS)

## bench-quick: every scenario tiny, Flux's included (a few minutes): catches a broken harness, asserts no timing;
## results in bin/bench-quick
bench-quick:
	@$(MAKE) --no-print-directory bench BENCHFLAGS='-quick $(BENCHFLAGS)'

## bench-go: the Go benchmarks alone (the status handler, a Helm chart's render)
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -count 5 ./internal/api
	$(GO) test -run '^$$' -bench 'RenderChart' -benchmem -count 5 ./internal/render

## kind-up: a kind cluster with deployd in it (needs Docker; sigs.k8s.io/kind's Go API)
kind-up:
	cd hack/kind && $(GO) run . up --repo $(CURDIR)

## kind-down: remove the kind cluster
kind-down:
	cd hack/kind && $(GO) run . down

## image-tar: the same image without Docker (the Dockerfile's recipe run on this machine), as bin/deployd-image.tar
image-tar:
	$(GO) run ./hack/image -o $(BIN)/deployd-image.tar -tag deployd:$(VERSION) -version $(VERSION) -commit $(COMMIT)

## image: the container image (needs Docker)
image:
	docker build --build-arg VERSION=$(VERSION) --build-arg COMMIT=$(COMMIT) -t deployd:$(VERSION) .
