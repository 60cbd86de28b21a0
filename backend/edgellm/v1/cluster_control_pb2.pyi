from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("session_id", "head_address", "token", "peer_resource", "bind_address", "model")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    HEAD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PEER_RESOURCE_FIELD_NUMBER: _ClassVar[int]
    BIND_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    head_address: str
    token: str
    peer_resource: str
    bind_address: str
    model: str
    def __init__(self, session_id: _Optional[str] = ..., head_address: _Optional[str] = ..., token: _Optional[str] = ..., peer_resource: _Optional[str] = ..., bind_address: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

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
