# One image for every p2pnet role: the Maestro, a peer (REST and gRPC sides), the launcher, the client.
#   docker build -t p2pnet .
#   docker run --rm p2pnet p2p --help
# A container runs one node of a topology: see docs/kubernetes.md (control/container.py is the entrypoint).
# BASE: any Debian-like image with Python 3.11 and its venv module (the tests build on a
# debootstrapped bookworm with Debian's python3 and python3-venv).
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG P2P_UID=10001
ENV VIRTUAL_ENV=/opt/p2pnet \
    PATH=/opt/p2pnet/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, in their own layer: a change to the source does not reinstall them.
COPY requirements.txt constraints.txt /tmp/p2pnet-requirements/
RUN python3 -m venv "$VIRTUAL_ENV" \
 && grep -v '^-e ' /tmp/p2pnet-requirements/requirements.txt > /tmp/p2pnet-requirements/runtime.txt \
 && pip install --quiet -r /tmp/p2pnet-requirements/runtime.txt -c /tmp/p2pnet-requirements/constraints.txt \
 && rm -rf /tmp/p2pnet-requirements

# The unprivileged account every server runs as; its state (run folder, shared files) lives in
# /var/lib/p2pnet, a volume in compose and Kubernetes. No VOLUME here: an engine that mounts
# nothing would leave anonymous volumes behind.
RUN groupadd --system --gid "$P2P_UID" p2p \
 && useradd --system --uid "$P2P_UID" --gid "$P2P_UID" --home-dir /var/lib/p2pnet --no-create-home \
      --shell /usr/sbin/nologin p2p \
 && mkdir -p /var/lib/p2pnet/shared /run/p2pnet /etc/p2pnet \
 && chown -R "$P2P_UID:$P2P_UID" /var/lib/p2pnet /run/p2pnet \
 && chmod 0700 /run/p2pnet

# The source, owned by root and read-only for the servers; .dockerignore keeps secrets, run
# folders and tests out.
WORKDIR /app
COPY . /app
RUN pip install --quiet --no-deps --no-build-isolation -e /app \
 && python -m compileall -q /app

USER ${P2P_UID}:${P2P_UID}
# The node's own health: GET /health, and gRPC health for a peer (control/container.py health).
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "control.container", "health"]
ENTRYPOINT ["python", "-m", "control.container"]
CMD ["node"]
