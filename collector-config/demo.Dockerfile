# The kilostar-otel demo as a container, for docker-compose.yaml (build context: the repository root).
FROM python:3.12-slim
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip install --no-cache-dir ".[cli]"
ENTRYPOINT ["kilostar-otel"]
CMD ["demo", "--otlp-endpoint", "http://otel-collector:4317"]
