from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelInfo(_message.Message):
    __slots__ = ("id", "weights_cid", "architecture", "num_layers", "hidden_size", "context_length", "dtype", "weights_bytes", "in_store", "loaded", "description", "load_ms")
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
    LOAD_MS_FIELD_NUMBER: _ClassVar[int]
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
    load_ms: int
    def __init__(self, id: _Optional[str] = ..., weights_cid: _Optional[str] = ..., architecture: _Optional[str] = ..., num_layers: _Optional[int] = ..., hidden_size: _Optional[int] = ..., context_length: _Optional[int] = ..., dtype: _Optional[str] = ..., weights_bytes: _Optional[int] = ..., in_store: _Optional[bool] = ..., loaded: _Optional[bool] = ..., description: _Optional[str] = ..., load_ms: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("backend_version", "device", "memory_total_bytes", "memory_free_bytes", "prefill_tokens_per_s", "decode_tokens_per_s", "active_requests", "loaded_models", "engine", "model_memory_budget_bytes", "model_memory_used_bytes", "model_unloads")
    BACKEND_VERSION_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FREE_BYTES_FIELD_NUMBER: _ClassVar[int]
    PREFILL_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    DECODE_TOKENS_PER_S_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    LOADED_MODELS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    MODEL_MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_UNLOADS_FIELD_NUMBER: _ClassVar[int]
    backend_version: str
    device: str
    memory_total_bytes: int
    memory_free_bytes: int
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    active_requests: int
    loaded_models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    engine: str
    model_memory_budget_bytes: int
    model_memory_used_bytes: int
    model_unloads: int
    def __init__(self, backend_version: _Optional[str] = ..., device: _Optional[str] = ..., memory_total_bytes: _Optional[int] = ..., memory_free_bytes: _Optional[int] = ..., prefill_tokens_per_s: _Optional[float] = ..., decode_tokens_per_s: _Optional[float] = ..., active_requests: _Optional[int] = ..., loaded_models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ..., engine: _Optional[str] = ..., model_memory_budget_bytes: _Optional[int] = ..., model_memory_used_bytes: _Optional[int] = ..., model_unloads: _Optional[int] = ...) -> None: ...
