# anvil — bare-metal provisioning. `make help` lists the targets.
SHELL   := /bin/bash
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
BINARIES := anvil-agent anvil-controller anvilctl

.PHONY: help deps build proto test test-unit lint bench lab lab-down clean

help:
	@echo "make build     static binaries in bin/"
	@echo "make proto     regenerate proto/ Go code (pinned plugins)"
	@echo "make test      install dependencies, lint, run every test"
	@echo "make bench     benchmarks with ratios against baselines (docs/benchmarks.md)"
	@echo "make lab       controller + simulated machines on loop devices, to Ready"
	@echo "make lab-down  remove everything the lab created"

deps:
	@hack/install-deps.sh

build:
	@mkdir -p bin
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvil-agent ./agent/cmd/anvil-agent
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvil-controller ./controller/cmd/anvil-controller
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -o bin/anvilctl ./controller/cmd/anvilctl

proto:
	hack/gen-proto.sh

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt needed:"; echo "$$bad"; exit 1; fi
	go vet ./...

test: deps lint build
	go test -race -count=1 -timeout 20m ./...

bench: deps build
	hack/bench.sh

lab: deps build
	hack/lab.sh up

lab-down:
	hack/lab.sh down

clean:
	rm -rf bin .tools
