FROM python:3.11-slim

# Pillow, numpy and uvloop ship manylinux wheels: no compiler is needed.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HOME=/tmp
WORKDIR /app

COPY pyproject.toml README.md ./
COPY asyncds ./asyncds
# Only what a run needs (no test or export extras). outputs/ is writable by any uid, so
# `docker run --user "$(id -u):$(id -g)"` works with or without a mounted folder.
RUN pip install . && mkdir -p /app/outputs && chmod 1777 /app/outputs
COPY config.yaml ./
COPY examples ./examples

# The default user when none is given; `--user` picks any other.
USER 1000:1000
ENTRYPOINT ["python", "-m", "asyncds"]
CMD ["config.yaml"]
