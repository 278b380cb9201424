# shardrelay — the two commands a newcomer needs are `make run` and `make test`.
CARGO ?= cargo
ARGS ?=
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)

.PHONY: all toolchain build release run test test-tools test-unit test-uring test-epoll test-conformance test-interop lint fmt bench bench-compare storm cluster-bench storm-tls cpu-per-message baseline syscalls shard-scaling alloc-count loadtest clean

all: build

## A clear message instead of a confusing build error on a too-old Rust.
toolchain:
	@bash scripts/check-toolchain.sh

build: toolchain
	$(CARGO) build --workspace

release: toolchain
	$(CARGO) build --release --workspace

## Start the relay with its defaults: public 0.0.0.0:8080, admin 127.0.0.1:9090.
run: release
	./target/release/shardrelay $(ARGS)

## Everything CI checks: formatting, lints, unit and property tests, the black-box suite
## once per driver (io_uring, then epoll), then Autobahn and the real-client interop
## checks against the same (debug) binary the suite used.
test: toolchain test-tools lint test-unit test-uring test-epoll test-conformance test-interop soak-short

## promtool, tmux and systemd-analyze for tests/operator.rs (Debian packages; root).
test-tools:
	bash scripts/install-test-tools.sh

## As `make conformance`, but leaves docs/conformance.md alone (a test run must not
## rewrite a tracked file).
test-conformance:
	CONFORMANCE_DOC=0 SHARDRELAY_BIN=$(TARGET_DIR)/debug/shardrelay CARGO="$(CARGO)" bash scripts/conformance.sh

test-interop:
	SHARDRELAY_BIN=$(TARGET_DIR)/debug/shardrelay CARGO="$(CARGO)" bash scripts/interop.sh

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

## shardrelay beside an ordinary tokio relay (benches/baseline), same load, one table.
bench-compare:
	CARGO="$(CARGO)" ./scripts/bench-compare.sh

## Syscalls per relayed message (perf stat on the relay's tracepoints): pair and server-id,
## io_uring and epoll, 4 open-loop rates (RATES=, DRIVERS= to narrow). Needs root for perf.
syscalls:
	$(CARGO) build --release -p shardrelay -p shardrelay-load
	bash scripts/syscalls-per-message.sh

## Connection storm (#20): 19,000 connections as fast as the relay accepts them, every
## style, shardrelay beside the tokio baseline, then shaped by --per-ip-rate.
storm: baseline
	$(CARGO) build --release -p shardrelay -p shardrelay-load
	bash scripts/storm.sh

## TLS handshake storm (#16 pt 4): full TLS 1.3 handshakes + upgrades per CPU-second on
## shardrelay --tls-cert, nginx (installed if missing) in front of shardrelay, and the
## tokio baseline with tokio-rustls, in one run (scripts/storm.sh, TLS=1).
storm-tls: baseline
	$(CARGO) build --release -p shardrelay -p shardrelay-load
	TLS=1 bash scripts/storm.sh

## Several hosts: the same load through HAProxy + 3 nodes, HAProxy + 1 node, and direct.
cluster-bench:
	bash scripts/cluster-bench.sh

## Relay CPU per million forwarded messages at fixed rates, relay and load pinned apart,
## shardrelay beside the tokio baseline and the raw-copy relay (PERF=1 adds a profile).
cpu-per-message: baseline
	$(CARGO) build --release -p shardrelay -p shardrelay-load
	bash scripts/cpu-per-message.sh

## The reference relays of benches/baseline (tokio baseline and --raw-copy), release.
baseline:
	$(CARGO) build --release --manifest-path benches/baseline/Cargo.toml \
		--target-dir benches/baseline/target

## Allocations per relayed message (a counting-allocator build, --features alloc-count).
alloc-count:
	CARGO="$(CARGO)" bash scripts/alloc-per-message.sh

## Peak throughput with --shards 1 vs --shards 2 (and one shard on a core of its own), relay
## CPU, and the handoff histogram of 10,000 fresh connections on two shards.
shard-scaling:
	$(CARGO) build --release -p shardrelay -p shardrelay-load
	bash scripts/shard-scaling.sh

clean:
	$(CARGO) clean

.PHONY: conformance interop

## Autobahn|Testsuite (fuzzingclient, all cases but 12.*/13.*) against /v1/echo; writes
## docs/conformance.md. Installs the suite into target/conformance/ on first run.
conformance:
	CARGO="$(CARGO)" bash scripts/conformance.sh

## Real clients over loopback: Python websockets (server-id), Node ws (pair), headless
## Chromium (session), curl (tickets), wscat (echo). Tools are cached under target/interop/.
interop:
	CARGO="$(CARGO)" bash scripts/interop.sh
.PHONY: soak soak-short

## Soak with faults: a release relay under pair, server-id, session and ticket load plus
## the chaos client for SOAK_SECONDS (default 600), then registry, fd, RSS and log checks
## and SIGTERM under load. Logs and reports in target/soak/.
SOAK_SECONDS ?= 600
soak:
	$(CARGO) build --release -p shardrelay -p shardrelay-load
	SOAK_NO_BUILD=1 SOAK_SECONDS=$(SOAK_SECONDS) CARGO="$(CARGO)" bash scripts/soak.sh

## The same for 60 s on the debug builds `make test` already has (part of `make test`).
soak-short:
	$(CARGO) build -p shardrelay -p shardrelay-load
	SHARDRELAY_BIN=$(TARGET_DIR)/debug/shardrelay SOAK_LOAD_BIN=$(TARGET_DIR)/debug/shardrelay-load \
		SOAK_SECONDS=60 SOAK_P99_FLOOR_US=$${SOAK_P99_FLOOR_US:-1000} CARGO="$(CARGO)" bash scripts/soak.sh
