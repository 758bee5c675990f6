# Startdeliver destination for Segment: one Makefile for the whole workspace.
# Module loops use `go list -m`, since `go test ./...` at a go.work root
# matches nothing.
SHELL := /bin/bash
MODULES := $(shell go list -m -f '{{.Dir}}')
BIN := bin

.PHONY: run test test-unit build lint tidy emulators emulators-stop bench deploy fmt

## run: start the whole system locally (emulators, Startdeliver stand-in, ingest, deliver)
run: build
	scripts/run.sh

## test: everything CI runs (starts the emulators it needs and stops them after)
test:
	scripts/emulators.sh run scripts/test.sh

## test-unit: tests only, against emulators that are already running (or skipped)
test-unit:
	scripts/test.sh

## build: both services and the commands into ./bin
build:
	@mkdir -p $(BIN)
	go build -o $(BIN)/ingest ./ingest
	go build -o $(BIN)/deliver ./deliver
	go build -o $(BIN)/ ./ingest/cmd/... ./deliver/cmd/...

## lint: gofmt, go vet per module, references to repository files, offline infra checks
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do (cd $$m && go vet ./...) || exit 1; done
	@test -z "$$(gofmt -l scripts/bench/baseline)" || { echo "gofmt would change scripts/bench/baseline"; exit 1; }
	@cd scripts/bench/baseline && GOWORK=off go vet ./...
	@cd deliver && go test -count=1 -run '^TestReferencesResolve$$' ./internal/deploycheck
	@if [ -x infra/check.sh ]; then infra/check.sh; fi

fmt:
	gofmt -w $(MODULES)

## tidy: go mod tidy per module (-e: tink-go-gcpkms's own tests import
## google.golang.org/genproto/googleapis/cloud/kms/v1, which genproto no
## longer has; tidy reports that and keeps going, our builds never need it)
tidy:
	@for m in $(MODULES); do (cd $$m && go mod tidy -e) || exit 1; done

## emulators: start the Pub/Sub and Firestore emulators and leave them running
emulators:
	scripts/emulators.sh start

emulators-stop:
	scripts/emulators.sh stop

## bench: benchmarks with baselines measured in the same run
bench:
	scripts/emulators.sh run scripts/bench.sh

## deploy: build, push and deploy to Google Cloud (see infra/README.md)
deploy:
	infra/deploy.sh
