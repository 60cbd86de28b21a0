from edgellm.v1 import inference_pb2 as _inference_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PrefixKeysRequest(_message.Message):
    __slots__ = ("model", "prompt", "messages", "raw_prompt")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RAW_PROMPT_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    messages: _inference_pb2.ChatMessages
    raw_prompt: str
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., messages: _Optional[_Union[_inference_pb2.ChatMessages, _Mapping]] = ..., raw_prompt: _Optional[str] = ...) -> None: ...

class PrefixKeysResponse(_message.Message):
    __slots__ = ("keys", "weights_cid", "block_size", "prompt_tokens")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CID_FIELD_NUMBER: _ClassVar[int]
    BLOCK_SIZE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    weights_cid: str
    block_size: int
    prompt_tokens: int
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., weights_cid: _Optional[str] = ..., block_size: _Optional[int] = ..., prompt_tokens: _Optional[int] = ...) -> None: ...

class HeldKeysRequest(_message.Message):
    __slots__ = ("after_seq", "limit")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    limit: int
    def __init__(self, after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class HeldKeysResponse(_message.Message):
    __slots__ = ("keys", "next_seq", "more")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SEQ_FIELD_NUMBER: _ClassVar[int]
    MORE_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    next_seq: int
    more: bool
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., next_seq: _Optional[int] = ..., more: _Optional[bool] = ...) -> None: ...

class BlockManifestRequest(_message.Message):
    __slots__ = ("keys", "weights_cid", "providers")
    KEYS_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CID_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    weights_cid: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, keys: _Optional[_Iterable[bytes]] = ..., weights_cid: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ...) -> None: ...

class BlockManifestResponse(_message.Message):
    __slots__ = ("manifest", "blocks")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    blocks: int
    def __init__(self, manifest: _Optional[bytes] = ..., blocks: _Optional[int] = ...) -> None: ...

class StartClusterHeadRequest(_message.Message):
    __slots__ = ("session_id", "bind_address", "token", "peer_resource")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    BIND_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PEER_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    bind_address: str
    token: str
    peer_resource: str
    def __init__(self, session_id: _Optional[str] = ..., bind_address: _Optional[str] = ..., token: _Optional[str] = ..., peer_resource: _Optional[str] = ...) -> None: ...

class ClusterNode(_message.Message):
    __slots__ = ("session_id", "head_address", "pid", "peer_resource")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    PEER_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    head_address: str
    pid: int
    peer_resource: str
    def __init__(self, session_id: _Optional[str] = ..., head_address: _Optional[str] = ..., pid: _Optional[int] = ..., peer_resource: _Optional[str] = ...) -> None: ...

class StartClusterHeadResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: ClusterNode
    def __init__(self, node: _Optional[_Union[ClusterNode, _Mapping]] = ...) -> None: ...

class JoinClusterRequest(_message.Message):
    __slots__ = ("session_id", "head_address", "token", "peer_resource", "bind_address")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PEER_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    BIND_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    head_address: str
    token: str
    peer_resource: str
    bind_address: str
    def __init__(self, session_id: _Optional[str] = ..., head_address: _Optional[str] = ..., token: _Optional[str] = ..., peer_resource: _Optional[str] = ..., bind_address: _Optional[str] = ...) -> None: ...

class JoinClusterResponse(_message.Message):
    __slots__ = ("node",)
    NODE_FIELD_NUMBER: _ClassVar[int]
    node: ClusterNode
    def __init__(self, node: _Optional[_Union[ClusterNode, _Mapping]] = ...) -> None: ...

class LeaveClusterRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class LeaveClusterResponse(_message.Message):
    __slots__ = ("left",)
    LEFT_FIELD_NUMBER: _ClassVar[int]
    left: bool
    def __init__(self, left: _Optional[bool] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("id", "weights_cid", "architecture", "num_layers", "hidden_size", "context_length", "dtype", "weights_bytes", "in_store", "loaded", "description")
    ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CID_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    NUM_LAYERS_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_BYTES_FIELD_NUMBER: _ClassVar[int]
    IN_STORE_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    id: str
    weights_cid: str
    architecture: str
    num_layers: int
    hidden_size: int
    context_length: int
    dtype: str
    weights_bytes: int
    in_store: bool
    loaded: bool
    description: str
    def __init__(self, id: _Optional[str] = ..., weights_cid: _Optional[str] = ..., architecture: _Optional[str] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., context_length: _Optional[int] = ..., dtype: _Optional[str] = ..., weights_bytes: _Optional[int] = ..., in_store: _Optional[bool] = ..., loaded: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class LoadModelProgress(_message.Message):
    __slots__ = ("phase", "done", "total", "model")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    phase: str
    done: int
    total: int
    model: ModelInfo
    def __init__(self, phase: _Optional[str] = ..., done: _Optional[int] = ..., total: _Optional[int] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("backend_version", "device", "memory_total_bytes", "memory_free_bytes", "prefill_tokens_per_s", "decode_tokens_per_s", "active_requests", "loaded_models")
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    backend_version: str
    device: str
    memory_total_bytes: int
    memory_free_bytes: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    active_requests: int
    loaded_models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, backend_version: _Optional[str] = ..., device: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., prefill_tokens_per_s: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., active_requests: _Optional[int] = ..., loaded_models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...
