VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO      ?= go
BIN     ?= dfs

.PHONY: build test check lint demo bench fuzz clean

## build: the dfs binary, with its version
build:
	$(GO) build -ldflags "-X main.Version=$(VERSION)" -o $(BIN) .

## test: everything CI runs: format, vet, and all tests with the race detector
test: check
	$(GO) test -race -count=1 -timeout 20m ./...

## check: gofmt, go vet, and go.mod as go mod tidy would leave it
check:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@$(GO) mod tidy -diff || { echo "go.mod or go.sum is not tidy: run go mod tidy"; exit 1; }

## lint: staticcheck (fetched through the Go module proxy; not part of test)
lint:
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## demo: a local cluster and a put/get round trip
demo: build
	DFS=./$(BIN) ./scripts/demo.sh

## bench: dfs bench on 1 GiB files next to the machine's own baselines, then the go test benchmarks
bench: build
	./$(BIN) bench --size 1GiB
	$(GO) test -run '^$$' -bench . -benchmem ./...

## fuzz: every fuzz target for FUZZTIME each (default 1m; the seed corpora run in make test)
fuzz:
	FUZZTIME=$(or $(FUZZTIME),1m) GO=$(GO) ./scripts/fuzz.sh

clean:
	rm -f $(BIN)
