from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class KVManifestRequest(_message.Message):
    __slots__ = ("weights_cid", "keys")
    WEIGHTS_CID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    weights_cid: str
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, weights_cid: _Optional[str] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class KVManifestReply(_message.Message):
    __slots__ = ("manifest", "blocks", "refused")
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    manifest: bytes
    blocks: int
    refused: str
    def __init__(self, manifest: _Optional[bytes] = ..., blocks: _Optional[int] = ..., refused: _Optional[str] = ...) -> None: ...
