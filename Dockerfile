# Build the wheels in one stage, install them into a slim image with no build tools.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authz ./authz
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin authz
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels authz && rm -rf /wheels
USER 10001
EXPOSE 9001 9090
ENTRYPOINT ["authz"]
CMD ["serve", "-c", "/etc/authz/authz.yaml"]
