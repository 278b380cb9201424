# shardrelay — the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo
ARGS ?=

.PHONY: all build release run test test-unit test-uring test-epoll lint fmt bench loadtest clean

all: build

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release --workspace

## Start the relay with its defaults: public 0.0.0.0:8080, admin 127.0.0.1:9090.
run: release
	./target/release/shardrelay $(ARGS)

## Everything CI checks: formatting, lints, unit and property tests, then the black-box
## suite once per driver (io_uring, then epoll).
test: lint test-unit test-uring test-epoll

test-unit:
	$(CARGO) test --workspace --lib --bins
	$(CARGO) test --workspace --test 'prop_*'

test-uring:
	SHARDRELAY_DRIVER=uring $(CARGO) test --workspace --tests --exclude shardrelay-load -- --skip prop_

test-epoll:
	SHARDRELAY_DRIVER=epoll $(CARGO) test --workspace --tests --exclude shardrelay-load -- --skip prop_

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

bench:
	$(CARGO) bench --bench codec --bench stats --bench relay_paths

## The demo a newcomer runs second: a relay plus ~20 s of mixed load, both tables.
loadtest:
	$(CARGO) build --release -p shardrelay -p shardrelay-load
	./scripts/loadtest-demo.sh

clean:
	$(CARGO) clean
