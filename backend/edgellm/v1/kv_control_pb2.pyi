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
