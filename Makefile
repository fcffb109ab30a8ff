# LogStream's developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test broker chromium lint fmt crds unit rbac bench-scaling bench-worker bench-operator

## Everything CI checks: a broker, formatting, clippy, then every test of the workspace.
test: broker chromium lint
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast; \
	else \
		$(CARGO) test --workspace --no-fail-fast; \
	fi
	$(CARGO) test --workspace --doc

## Headless Chromium for the dashboard's browser test (Debian's chromium when missing).
chromium:
	@scripts/ensure-chromium.sh

## A RabbitMQ broker on loopback (installed from Debian when missing), or AMQP_ADDR.
broker:
	@scripts/ensure-rabbitmq.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate crds/ from the Rust types (a test fails when it is stale).
crds:
	$(CARGO) run -q -p logstream-operator --bin crdgen

## Tests that need no broker.
unit:
	$(CARGO) test --workspace --lib

.PHONY: test broker chromium lint fmt crds unit rbac bench-scaling bench-worker bench-operator
