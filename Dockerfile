# One image for every production process: migrate, web (gunicorn), worker and beat.
# docker-compose.yml picks the process with `command:`; see docs/deploy.md.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The code finds templates/ and migrations/ next to its own source, so install in place.
COPY . .
RUN pip install --no-deps -e . \
    && python -m compileall -q feedback workers migrations

# The code stays owned by root and read-only to the service; only /data (and home) is writable.
# A named volume mounted on /data starts with this folder's owner, so the user can write it.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/feedback feedback \
    && mkdir -p /data/models \
    && chown -R feedback:feedback /data
USER feedback

ENV FEEDBACK_ENV=production \
    FEEDBACK_INSTANCE_PATH=/data \
    PORT=8000
EXPOSE 8000

CMD ["gunicorn", "--bind", "0.0.0.0:8000", "feedback.web:create_app_from_env()"]
