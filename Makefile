# The one entry point for building, checking, testing and benchmarking.

.PHONY: run test unit e2e lint fmt schemas bench fuzz

# Set up and run the gateway on this machine (tansu broker included).
run:
	deploy/dev.sh

# The whole test suite: lints, unit tests, end-to-end tests against a real broker (and
# PostgreSQL binaries, for the ticket service's throwaway clusters).
test: lint
	deploy/install-tansu.sh
	deploy/postgres.sh install
	deploy/fetch-model.sh
	cargo build -p gateway -p tickets
	cargo test --workspace --all-targets

unit:
	cargo test --workspace --exclude e2e

e2e:
	cargo build -p gateway -p tickets
	cargo test -p e2e

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# Regenerate docs/schemas/*.json from the Rust event types.
schemas:
	UPDATE_SCHEMAS=1 cargo test -p hotline-contract --test schemas

# The intake benchmark (see docs/benchmarks.md).
bench:
	cargo build --release -p gateway -p e2e
	target/release/intake-bench --messages 20000 --sessions 64

# The fuzz targets of the SIP, SDP and RTP parsers, each for FUZZ_SECS seconds from the
# checked-in corpus (channels/sip/fuzz/corpus; new inputs go to a scratch directory).
# cargo-fuzz needs nightly features: RUSTC_BOOTSTRAP lets the stable toolchain build them.
FUZZ_SECS ?= 20
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
	cd channels/sip/fuzz && for t in sip_message sdp rtp; do \
	  scratch=$$(mktemp -d) && \
	  RUSTC_BOOTSTRAP=1 cargo fuzz run $$t $$scratch corpus/$$t -- -max_total_time=$(FUZZ_SECS) || exit 1; \
	  rm -rf $$scratch; \
	done
