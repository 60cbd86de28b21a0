"""The backend's exception hierarchy.

Recoverable errors concern one request or one model; the server maps them to a gRPC
status code and keeps serving. Fatal errors mean this process cannot go on (vLLM's
`EngineDeadError` spirit): the server reports them and exits so the supervisor restarts it.
"""

from __future__ import annotations


class EdgeLLMError(Exception):
    """Base of every error the backend raises on purpose."""


class RecoverableError(EdgeLLMError):
    """A request or a model failed; the backend keeps serving."""


class InvalidRequest(RecoverableError):
    """The request is malformed or out of range (gRPC INVALID_ARGUMENT)."""


class WeightsMismatch(InvalidRequest):
    """A peer's store holds other weights than the plan names."""


class UnsupportedModel(InvalidRequest):
    """A model the engine cannot run, or files that are no model (`model add`)."""


class ModelTooLarge(InvalidRequest):
    """A model whose weights exceed the backend's model memory budget (model_memory_mb)."""


class ModelNotFound(RecoverableError):
    """No known model has that id (gRPC NOT_FOUND)."""


class Unavailable(RecoverableError):
    """The backend cannot serve this right now, e.g. a model failed to load (UNAVAILABLE)."""


class RequestCancelled(RecoverableError):
    """The request was aborted or its client went away (gRPC CANCELLED)."""


class StoreError(RecoverableError):
    """The model store is missing or holds something unexpected."""


class ClusterError(RecoverableError):
    """A Ray node or cluster could not start, join or run (UNAVAILABLE)."""


class KVError(RecoverableError):
    """KV-cache blocks over IPFS: Kubo, a block or a manifest let us down. Never the
    request's end: callers log it and compute what the cache would have given."""


class KuboError(KVError):
    """Kubo could not be reached or refused the call (connection, HTTP error, timeout)."""


class BlockRefused(KVError):
    """A fetched KV block is not the one the request needs; the reason says why."""


class ManifestRefused(KVError):
    """A KV manifest (from a request or a peer) is not a valid edgellm KV manifest."""


class FatalError(EdgeLLMError):
    """The backend cannot continue; the process should exit."""
