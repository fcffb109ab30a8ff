# LogStream's developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test broker broker4 redis test-cluster chromium lint fmt crds unit rbac bench-scaling bench-worker bench-operator

## Everything CI checks: the brokers, Redis, the chart tools, Chromium, formatting, clippy,
## then every test of the workspace twice, against RabbitMQ 3.10 (AMQP_ADDR) and RabbitMQ 4
## (AMQP_ADDR_RABBITMQ4), with the test counts per broker at the end (scripts/test-brokers.sh;
## TEST_BROKERS=rabbitmq3 or rabbitmq4 runs one), the node-loss tests on a RabbitMQ 4
## cluster, and the doc tests. The chart tests use helm, kubernetes-validate and checkov from
## .tools/.
test: broker broker4 redis chart-tools checkov chromium lint
	@CARGO="$(CARGO)" scripts/test-brokers.sh
	@CARGO="$(CARGO)" scripts/test-cluster.sh
	$(CARGO) test --workspace --doc

## The node-loss tests (#[ignore]d integration tests named cluster_*) on a three-node
## RabbitMQ 4 cluster started for them and stopped afterwards (scripts/test-cluster.sh has the
## convention).
test-cluster:
	@CARGO="$(CARGO)" scripts/test-cluster.sh

## Headless Chromium for the dashboard's browser test (Debian's chromium when missing).
chromium:
	@scripts/ensure-chromium.sh

## A RabbitMQ broker on loopback (installed from Debian when missing), or AMQP_ADDR.
broker:
	@scripts/ensure-rabbitmq.sh

## RabbitMQ 4.0.5 on loopback (AMQP 5682, management 15682; Debian trixie's, in a shared
## debootstrap root installed when missing), or AMQP_ADDR_RABBITMQ4.
broker4:
	@scripts/ensure-rabbitmq4.sh

## Redis on 127.0.0.1:6379 (Debian's, installed when missing), or REDIS_URL.
redis:
	@scripts/ensure-redis.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Regenerate crds/ from the Rust types and copy them into the chart (tests fail when
## either is stale).
crds:
	$(CARGO) run -q -p logstream-operator --bin crdgen
	cp crds/*.yaml charts/logstream/crds/

## Tests that need no broker.
unit:
	$(CARGO) test --workspace --lib


## Replay the autoscaling traces through LogStream, KEDA + HPA and an oracle; update
## docs/benchmarks.md.
bench-scaling:
	$(CARGO) run -q --release -p logstream-autoscaler --bin logstream-scaling-sim -- --write docs/benchmarks.md

## Worker throughput and peak memory against a bare lapin consume+ACK loop, side by side
## (copy the printed table into docs/benchmarks.md).
bench-worker: broker
	$(CARGO) bench -p logstream-worker --bench throughput

## What a log costs on the way in and out: bytes and CPU per 1 KB log of every HTTP sink
## format with and without gzip, and the decode cost of JSON logs and OTLP (protobuf, JSON);
## no broker needed (copy the printed tables into docs/benchmarks.md).
.PHONY: bench-sink-encoding
bench-sink-encoding:
	$(CARGO) bench -p logstream-worker --bench sink_encoding

## `logstream produce --count 100000` against pika with per-message confirms, side by side on
## the local broker; pika goes into target/bench-venv. Updates docs/benchmarks.md.
.PHONY: bench-produce
bench-produce: broker
	$(CARGO) build -q --release -p logstream
	@test -x target/bench-venv/bin/python || python3 -m venv target/bench-venv
	@target/bench-venv/bin/pip install -q pika
	target/bench-venv/bin/python bench/produce_vs_pika.py --binary target/release/logstream --write docs/benchmarks.md

## The operator's memory and broker load (fake API server, real broker): idle, 100 pipelines
## of one output, 1,000 pipelines of two outputs sharing one vhost, on the RabbitMQ 4 node of
## `broker4` (AMQP_ADDR_RABBITMQ4 / MANAGEMENT_ADDR_RABBITMQ4 name another). Copy the printed
## table into docs/benchmarks.md.
bench-operator: broker4
	AMQP_ADDR=$${AMQP_ADDR_RABBITMQ4:-amqp://guest:guest@127.0.0.1:5682/%2f} \
	MANAGEMENT_ADDR=$${MANAGEMENT_ADDR_RABBITMQ4:-http://127.0.0.1:15682} \
	BENCH_PIPELINES=$${BENCH_PIPELINES:-100,1000} \
	$(CARGO) bench -p logstream-operator --profile operator --bench operator_memory

## LogStream's main job: a kind cluster where Docker and kind exist, else `logstream dev`
## with the quickstart pipeline and a burst, on this machine.
.PHONY: demo
demo:
	@scripts/demo.sh

## checkov in .tools/ (the policy scan of the chart and the worker Deployment; idempotent).
checkov:
	@scripts/install-checkov.sh

## helm, kubectl and kubernetes-validate in .tools/ (for the chart tests; idempotent).
chart-tools:
	@scripts/install-chart-tools.sh

## Regenerate the chart's RBAC rules (ClusterRole or per-namespace Roles, and the leader
## Lease's Role) from operator/src/rbac.rs (a chart test fails when they are stale).
rbac:
	$(CARGO) run -q -p logstream-operator --bin rbacgen > charts/logstream/files/rbac.yaml

## Container images: $(REGISTRY)logstream-{operator,worker,cli}:$(IMAGE_TAG). REGISTRY, when
## set, ends with a slash (e.g. REGISTRY=ghcr.io/logstream-io/).
REGISTRY ?=
IMAGE_TAG ?= dev
DOCKER ?= docker
images:
	$(DOCKER) build -f images/operator.Dockerfile -t $(REGISTRY)logstream-operator:$(IMAGE_TAG) .
	$(DOCKER) build -f images/worker.Dockerfile -t $(REGISTRY)logstream-worker:$(IMAGE_TAG) .
	$(DOCKER) build -f images/cli.Dockerfile -t $(REGISTRY)logstream-cli:$(IMAGE_TAG) .

## The end-to-end suite on kind (needs docker, kind, kubectl, helm; KIND_CLUSTER reuses a
## cluster). helm and kubectl from .tools/ are used when they are not on PATH.
e2e: chart-tools
	PATH="$$PATH:$(CURDIR)/.tools/bin" $(CARGO) run -q -p logstream-e2e --bin logstream-e2e

.PHONY: chart-tools checkov rbac images e2e
