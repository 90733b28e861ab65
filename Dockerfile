# syntax=docker/dockerfile:1
# The costgate admission webhook image.
#   docker build -t REGISTRY/costgate:TAG .
#
# Two stages on the same base: the builder installs the pinned, hash-checked wheels and
# costgate into a venv; the runtime stage copies only that venv. No compiler is needed
# (every dependency ships a wheel; --only-binary refuses sdists), none is in the image.
#
# The base is pinned by tag to a patch release. A tag can be pushed again; for builds that
# are reproducible byte for byte, pin the digest as well and let Renovate or Dependabot
# bump tag and digest together:
#   docker buildx imagetools inspect python:3.11.14-slim-bookworm   # prints the digest
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, in their own layer: rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: --no-deps \
        -r requirements.lock
# webhook/defaults/pricing.yaml links to pricing/default.yaml: the wheel bundles the file.
COPY pyproject.toml README.md ./
COPY pricing/ pricing/
COPY webhook/ webhook/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-cache-dir --no-deps --no-index /tmp/wheels/costgate-*.whl \
    && costgate --version

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="costgate" \
      org.opencontainers.image.description="Kubernetes admission webhook that prices GPU workloads before they start" \
      org.opencontainers.image.licenses="Apache-2.0"
# Bytecode was compiled at install time; the root filesystem is read-only in the cluster.
# HOME and the self-signed certificate folder (used only when no --tls-cert is given, as in
# `docker run`) point at /tmp, an emptyDir in the Deployment. A container listens on all
# of its interfaces; the Deployment sets COSTGATE_HOST as well.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    COSTGATE_HOST=0.0.0.0 \
    COSTGATE_CERT_DIR=/tmp/costgate/certs
COPY --from=builder /opt/venv /opt/venv
# A numeric user (the distroless "nonroot" id) with no entry in /etc/passwd, so Kubernetes'
# runAsNonRoot can check it; it owns no file in the image.
USER 65532:65532
EXPOSE 8443
# Kubernetes ignores HEALTHCHECK and uses the Deployment's probes (GET /healthz, /readyz);
# this one is for `docker run` and Compose, in Python because the image has no curl.
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, ssl, urllib.request; urllib.request.urlopen('https://127.0.0.1:' + os.environ.get('COSTGATE_PORT', '8443') + '/healthz', context=ssl._create_unverified_context(), timeout=2)"]
ENTRYPOINT ["costgate"]
CMD ["serve"]
