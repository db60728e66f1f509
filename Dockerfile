# The gpumeter worker and CLI image (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY config ./config
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENTRYPOINT ["gpumeter"]
CMD ["worker"]
