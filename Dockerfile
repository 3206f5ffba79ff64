# robustify's one image: the API, the Celery worker and the CLI (the command picks the part).
# Built from the project's own files; the only network it needs is PyPI, at build time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    ROBUSTIFY_DATA_DIR=/var/lib/robustify

# bubblewrap: every process that runs a user's model (upload check, training, evaluation) runs
# in its namespaces (core/service/sandbox/runner.py). The containers need user namespaces: docker-compose.yml
# lifts Docker's default seccomp filter for the api and worker services for that.
RUN apt-get update \
    && apt-get install -y --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# The dependencies first, from pyproject.toml alone, so that a code change does not reinstall
# torch: empty packages stand in for the code in this layer.
COPY pyproject.toml README.md ./
RUN mkdir -p core api worker cli robustify migrations \
    && touch core/__init__.py api/__init__.py worker/__init__.py cli/__init__.py \
        robustify/__init__.py migrations/__init__.py \
    && pip install . \
    && pip uninstall --yes robustify \
    && rm -rf core api worker cli robustify migrations

COPY core ./core
COPY api ./api
COPY worker ./worker
COPY cli ./cli
COPY robustify ./robustify
COPY migrations ./migrations
RUN pip install --no-deps . && rm -rf /src/build

# Not root: uploaded models are programs (TorchScript), and the worker runs them.
# The folders a named volume is mounted on exist here, so a new volume starts owned by robustify.
RUN useradd --system --uid 10001 --home-dir /var/lib/robustify --shell /usr/sbin/nologin robustify \
    && mkdir -p /var/lib/robustify/artifacts /var/lib/robustify/datasets \
        /var/lib/robustify/dataset-cache \
    && chown -R robustify:robustify /var/lib/robustify
USER robustify
WORKDIR /var/lib/robustify

EXPOSE 8000
# One machine, everything embedded under /var/lib/robustify; docker-compose.yml runs the parts
# apart (`robustify api`, `robustify worker`, `robustify db upgrade`) on PostgreSQL, Redis and
# an S3 store (SeaweedFS), which `python -m core.service.storage.bucket` gives its bucket.
CMD ["robustify", "up", "--host", "0.0.0.0", "--port", "8000"]
