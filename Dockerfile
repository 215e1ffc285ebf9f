# One image, both commands: `otp-operator` (the kopf operator) and `otp-relay` (the relay pods the
# operator deploys). Build: docker build --build-arg REVISION=$(git rev-parse HEAD) -t IMAGE .
# The base images of both stages must match: the virtualenv copied into the final stage links to
# the base image's Python.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: make the wheel and install it with its dependencies into a self-contained venv ---
# (the venv's own pip builds the wheel: a base whose system Python has no pip works too)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY relay/ relay/
RUN python -m venv /opt/otp-relay-operator \
 && /opt/otp-relay-operator/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/otp-relay-operator/bin/pip install --no-cache-dir /wheels/otp_relay_operator-*.whl \
 && /opt/otp-relay-operator/bin/pip uninstall --yes pip \
 && /opt/otp-relay-operator/bin/otp-operator --help >/dev/null \
 && /opt/otp-relay-operator/bin/otp-relay --help >/dev/null

# --- runtime: the base image, the venv, a non-root user; no compilers, wheels or pip caches ---
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="otp-relay-operator" \
      org.opencontainers.image.description="Kubernetes operator that delivers Auth0 SMS one-time passwords through the 8x8 SMS API (commands: otp-operator, otp-relay)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/otp-relay-operator/otp-relay-operator" \
      org.opencontainers.image.url="https://github.com/otp-relay-operator/otp-relay-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="otp-relay-operator"
# A numeric non-root user, so runAsNonRoot can check it; the chart and the relay pods set no
# runAsUser, so OpenShift's restricted SCC may run the image under an arbitrary uid instead.
RUN groupadd --system --gid 65532 otp \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin otp
COPY --from=build /opt/otp-relay-operator /opt/otp-relay-operator
ENV PATH=/opt/otp-relay-operator/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 65532:65532
WORKDIR /tmp
# 8080: the relay's HTTP port and the operator's liveness endpoint.
EXPOSE 8080
CMD ["otp-operator", "run", "--all-namespaces"]
