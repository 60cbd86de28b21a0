from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CapabilityRecord(_message.Message):
    __slots__ = ("peer_id", "seq", "issued_unix_ms", "expires_unix_ms", "withdrawn", "addrs", "backend_version", "device", "memory_total_bytes", "memory_free_bytes", "models", "prefill_tokens_per_s", "decode_tokens_per_s", "active_sessions", "max_sessions", "price_per_1k_tokens_micros", "region", "ray_address", "ipfs_peer_id", "ipfs_addrs", "engine", "accept_pulls", "pull_disk_budget_bytes")
    PEER_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    PRICE_PER_1K_TOKENS_MICROS_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    RAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    IPFS_PEER_ID_FIELD_NUMBER: _ClassVar[int]
    IPFS_ADDRS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    ACCEPT_PULLS_FIELD_NUMBER: _ClassVar[int]
    PULL_DISK_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    peer_id: bytes
    seq: int
    issued_unix_ms: int
    expires_unix_ms: int
    withdrawn: bool
    addrs: _containers.RepeatedScalarFieldContainer[bytes]
    backend_version: str
    device: str
    memory_total_bytes: int
    memory_free_bytes: int
    models: _containers.RepeatedCompositeFieldContainer[ServedModel]
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    active_sessions: int
    max_sessions: int
    price_per_1k_tokens_micros: int
    region: str
    ray_address: str
    ipfs_peer_id: bytes
    ipfs_addrs: _containers.RepeatedScalarFieldContainer[bytes]
    engine: str
    accept_pulls: bool
    pull_disk_budget_bytes: int
    def __init__(self, peer_id: _Optional[bytes] = ..., seq: _Optional[int] = ..., issued_unix_ms: _Optional[int] = ..., expires_unix_ms: _Optional[int] = ..., withdrawn: _Optional[bool] = ..., addrs: _Optional[_Iterable[bytes]] = ..., backend_version: _Optional[str] = ..., device: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., models: _Optional[_Iterable[_Union[ServedModel, _Mapping]]] = ..., prefill_tokens_per_s: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., active_sessions: _Optional[int] = ..., max_sessions: _Optional[int] = ..., price_per_1k_tokens_micros: _Optional[int] = ..., region: _Optional[str] = ..., ray_address: _Optional[str] = ..., ipfs_peer_id: _Optional[bytes] = ..., ipfs_addrs: _Optional[_Iterable[bytes]] = ..., engine: _Optional[str] = ..., accept_pulls: _Optional[bool] = ..., pull_disk_budget_bytes: _Optional[int] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("id", "weights_cid", "dir_cid", "num_layers", "layer_ranges", "weights_bytes", "unloaded", "load_ms")
    ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CID_FIELD_NUMBER: _ClassVar[int]
    DIR_CID_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    LAYER_RANGES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
    id: str
    weights_cid: str
    dir_cid: str
    num_layers: int
    layer_ranges: _containers.RepeatedCompositeFieldContainer[LayerRange]
    weights_bytes: int
    unloaded: bool
    load_ms: int
    def __init__(self, id: _Optional[str] = ..., weights_cid: _Optional[str] = ..., dir_cid: _Optional[str] = ..., num_layers: _Optional[int] = ..., layer_ranges: _Optional[_Iterable[_Union[LayerRange, _Mapping]]] = ..., weights_bytes: _Optional[int] = ..., unloaded: _Optional[bool] = ..., load_ms: _Optional[int] = ...) -> None: ...

class LayerRange(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class CapabilityRequest(_message.Message):
    __slots__ = ("known_seq",)
    KNOWN_SEQ_FIELD_NUMBER: _ClassVar[int]
    known_seq: int
    def __init__(self, known_seq: _Optional[int] = ...) -> None: ...

class JoinToken(_message.Message):
    __slots__ = ("version", "secret", "bootstrap")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SECRET_FIELD_NUMBER: _ClassVar[int]
    BOOTSTRAP_FIELD_NUMBER: _ClassVar[int]
    version: int
    secret: bytes
    bootstrap: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, version: _Optional[int] = ..., secret: _Optional[bytes] = ..., bootstrap: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PullRequest(_message.Message):
    __slots__ = ("model_id", "dir_cid", "weights_cid", "holder_addrs")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DIR_CID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CID_FIELD_NUMBER: _ClassVar[int]
    HOLDER_ADDRS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    dir_cid: str
    weights_cid: str
    holder_addrs: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, model_id: _Optional[str] = ..., dir_cid: _Optional[str] = ..., weights_cid: _Optional[str] = ..., holder_addrs: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PullReply(_message.Message):
    __slots__ = ("refused",)
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    refused: str
    def __init__(self, refused: _Optional[str] = ...) -> None: ...
