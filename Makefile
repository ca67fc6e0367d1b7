# Everything runs from the virtualenv in .venv/, created on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The OpenID Provider the end-to-end tests get real tokens from (oidc-provider, npm).
IDP_STAMP := tests/idp/node_modules/.installed
# The Gateway API's published schemas the manifest tests validate its objects with (npm).
SCHEMAS_STAMP := tests/schemas/node_modules/.installed
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)

.PHONY: install idp schemas run test bench-introspection test-unit lint format bench bench-tools bench-jwks bench-policy bench-tracing soak image lock clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# xds-protos ships an old copy of the opentelemetry.proto modules; installed after
	@# opentelemetry-proto it hides what the OTLP exporter imports: put the real ones back.
	$(PY) -m pip install --quiet --force-reinstall --no-deps \
		"opentelemetry-proto==$$($(PY) -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"
	touch $(STAMP)

idp: $(IDP_STAMP)

$(IDP_STAMP): tests/idp/package-lock.json
	npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error
	touch $(IDP_STAMP)

schemas: $(SCHEMAS_STAMP)

# @kubernetes-models/gateway-api declares Node >= 22 yet runs on 20 (the Node this is tested
# with): npm only warns, as long as engine-strict stays off, so say so whatever .npmrc says.
$(SCHEMAS_STAMP): tests/schemas/package-lock.json
	npm ci --prefix tests/schemas --no-audit --no-fund --loglevel=error --engine-strict=false
	touch $(SCHEMAS_STAMP)

## make run: dev key, authz, Envoy and an echo upstream on loopback; prints a curl to try.
run: install
	$(PY) -m dev.run

## make test: lint, type-check, then unit and end-to-end tests (real Envoy).
test: lint idp schemas
	$(PY) -m pytest -q

test-unit: install schemas
	$(PY) -m pytest -q -m "not e2e"

lint: install
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy authz
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/envoy --mode validate -c deploy/envoy.yaml --log-level error
	$(VENV)/bin/envoy --mode validate -c deploy/envoy-http.yaml --log-level error
	$(VENV)/bin/authz check-config --strict -c deploy/authz.yaml
	$(VENV)/bin/authz test deploy/authz_test.yaml

## make bench: gRPC and through-Envoy benchmarks against their baselines -> BENCHMARKS.md.
bench: install bench-tools
	$(PY) -m pip install --quiet matplotlib
	$(PY) -m bench.run

bench-tools:
	@command -v wrk >/dev/null && command -v h2load >/dev/null || \
		{ apt-get update -qq && apt-get install -y -qq wrk nghttp2-client; }

## make soak: reliability scenarios under load and faults (about 6 minutes) -> RELIABILITY.md.
soak: install
	$(PY) -m bench.soak

## make bench-jwks: random-kid flood and check latency while the IdP is down.
bench-jwks: install
	$(PY) -m bench.jwks_outage

## make bench-introspection: opaque tokens against the real OP: hit, miss, hit rate.
bench-introspection: install idp bench-tools
	$(PY) -m bench.introspection

## make bench-tracing: what a trace span adds to a check: off, sample 0, sample 1 exporting.
bench-tracing: install
	$(PY) -m bench.tracing

## make bench-policy: policy evaluation cost per check (20 rules) and one CEL expression.
bench-policy: install
	$(PY) -m bench.policy_eval

## make image: build the container image authz:VERSION with docker or podman, when one runs.
image:
	@if docker info >/dev/null 2>&1; then tool=docker; \
	elif command -v podman >/dev/null 2>&1; then tool=podman; \
	else echo "make image: skipped: no docker daemon and no podman on this machine"; exit 0; fi; \
	$$tool build --build-arg VERSION=$(VERSION) \
		--build-arg REVISION=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		-t authz:$(VERSION) .

## make lock: pin the image's runtime dependencies with their hashes (requirements.lock),
## for the Python of the image (3.11) on PyPI alone (no local wheel folders pip may know).
lock: install
	$(PY) -c 'import sys; assert sys.version_info[:2] == (3, 11), "the image runs Python 3.11"'
	$(PY) -m pip install --quiet pip-tools
	env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null $(VENV)/bin/pip-compile --quiet \
		--generate-hashes --strip-extras --allow-unsafe --no-emit-index-url \
		--no-emit-find-links --output-file requirements.lock pyproject.toml

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) tests/idp/node_modules tests/schemas/node_modules .dev .pytest_cache .mypy_cache .ruff_cache *.egg-info
