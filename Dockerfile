# authz's image: `make image` (docker or podman). The runtime dependencies come from
# requirements.lock, pinned with their hashes (`make lock`); only authz's own wheel is built.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authz ./authz
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
# make image passes the version from pyproject.toml and the commit it builds.
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=https://github.com/authz-project/authz
LABEL org.opencontainers.image.title="authz" \
      org.opencontainers.image.description="JWT external authorization service for Envoy" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
RUN groupadd --gid 10001 authz \
    && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin authz
COPY requirements.lock /tmp/requirements.lock
# xds-protos ships an old copy of the opentelemetry.proto modules; installed after
# opentelemetry-proto it hides what the OTLP exporter imports: its pinned, hash-checked
# entry is installed again, last.
RUN pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock \
    && python -c "import re; lock = open('/tmp/requirements.lock').read(); \
open('/tmp/otel.lock', 'w').write(re.search(r'^opentelemetry-proto==.*?(?=^\S|\Z)', lock, re.M | re.S)[0])" \
    && pip install --no-cache-dir --require-hashes --no-deps --force-reinstall -r /tmp/otel.lock \
    && rm /tmp/requirements.lock /tmp/otel.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --no-deps /wheels/*.whl && rm -rf /wheels
USER 10001:10001
# gRPC ext_authz, operations (/healthz, /readyz, /metrics), the HTTP authorization
# endpoint (when http_authz.listen is set to it, as in docs/kubernetes.md).
EXPOSE 9001 9090 9002
# The operations listener on 9090, as the Kubernetes manifests configure it (plain HTTP).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=2)"]
ENTRYPOINT ["authz"]
CMD ["serve", "-c", "/etc/authz/authz.yaml"]
