# The pipetrack image: the `pipetrack` command (migrations, exporter, wrappers, the demo pipeline)
# and the tracker library. Used by docker-compose.yml's migrate, exporter and demo services.
FROM python:3.12.8-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY tracker ./tracker
COPY exporter ./exporter
COPY sql ./sql
RUN pip install . && useradd --system --uid 10001 --no-create-home pipetrack

USER 10001
# The tracker's spool and data directory: writable by the unprivileged user.
ENV PIPETRACK_DATA_DIR=/tmp/pipetrack
EXPOSE 8479
ENTRYPOINT ["pipetrack"]
CMD ["--help"]
