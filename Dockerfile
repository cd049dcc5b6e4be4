# advaudit image: API, worker and beat share it; the command picks the role.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 ADVAUDIT_DATA_DIR=/data
WORKDIR /app

# Dependencies first, so code changes do not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir -p services db worker api advaudit \
    && touch services/__init__.py db/__init__.py worker/__init__.py api/__init__.py advaudit/__init__.py \
    && pip install . && pip uninstall -y advaudit

COPY services ./services
COPY db ./db
COPY worker ./worker
COPY api ./api
COPY advaudit ./advaudit
RUN pip install --no-deps . && useradd --create-home --uid 1000 advaudit && mkdir -p /data \
    && chown advaudit /data
USER advaudit

EXPOSE 8000
CMD ["advaudit", "serve", "--host", "0.0.0.0", "--port", "8000", "--no-worker"]
