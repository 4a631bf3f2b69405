FROM python:3.11-slim

# Pillow, numpy and uvloop ship manylinux wheels: no compiler is needed.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY asyncds ./asyncds
RUN pip install . && useradd --create-home --uid 1000 asyncds && mkdir -p /app/outputs \
    && chown asyncds /app/outputs
COPY config.yaml ./
COPY examples ./examples

USER asyncds
ENTRYPOINT ["python", "-m", "asyncds"]
CMD ["config.yaml"]
