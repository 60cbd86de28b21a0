from edgellm.v1 import p2p_pb2 as _p2p_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RefuseReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFUSE_REASON_UNSPECIFIED: _ClassVar[RefuseReason]
    REFUSE_REASON_MALFORMED: _ClassVar[RefuseReason]
    REFUSE_REASON_UNKNOWN_MODEL: _ClassVar[RefuseReason]
    REFUSE_REASON_WRONG_WEIGHTS: _ClassVar[RefuseReason]
    REFUSE_REASON_LAYER_RANGE: _ClassVar[RefuseReason]
    REFUSE_REASON_AT_CAPACITY: _ClassVar[RefuseReason]
    REFUSE_REASON_DEADLINE: _ClassVar[RefuseReason]
    REFUSE_REASON_HEARTBEAT_INTERVAL: _ClassVar[RefuseReason]
    REFUSE_REASON_DUPLICATE_SESSION: _ClassVar[RefuseReason]
    REFUSE_REASON_JOIN_FAILED: _ClassVar[RefuseReason]
    REFUSE_REASON_SHUTTING_DOWN: _ClassVar[RefuseReason]
REFUSE_REASON_UNSPECIFIED: RefuseReason
REFUSE_REASON_MALFORMED: RefuseReason
REFUSE_REASON_UNKNOWN_MODEL: RefuseReason
REFUSE_REASON_WRONG_WEIGHTS: RefuseReason
REFUSE_REASON_LAYER_RANGE: RefuseReason
REFUSE_REASON_AT_CAPACITY: RefuseReason
REFUSE_REASON_DEADLINE: RefuseReason
REFUSE_REASON_HEARTBEAT_INTERVAL: RefuseReason
REFUSE_REASON_DUPLICATE_SESSION: RefuseReason
REFUSE_REASON_JOIN_FAILED: RefuseReason
REFUSE_REASON_SHUTTING_DOWN: RefuseReason

class ClusterMessage(_message.Message):
    __slots__ = ("join", "heartbeat", "leave")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    LEAVE_FIELD_NUMBER: _ClassVar[int]
    join: JoinRequest
    heartbeat: Heartbeat
    leave: Leave
    def __init__(self, join: _Optional[_Union[JoinRequest, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., leave: _Optional[_Union[Leave, _Mapping]] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("session_id", "model_id", "weights_cid", "layers", "head_address", "ray_token", "deadline_unix_ms", "heartbeat_interval_ms")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CID_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    HEAD_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RAY_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    model_id: str
    weights_cid: str
    layers: _p2p_pb2.LayerRange
    head_address: str
    ray_token: bytes
    deadline_unix_ms: int
    heartbeat_interval_ms: int
    def __init__(self, session_id: _Optional[bytes] = ..., model_id: _Optional[str] = ..., weights_cid: _Optional[str] = ..., layers: _Optional[_Union[_p2p_pb2.LayerRange, _Mapping]] = ..., head_address: _Optional[str] = ..., ray_token: _Optional[bytes] = ..., deadline_unix_ms: _Optional[int] = ..., heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Leave(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class ClusterReply(_message.Message):
    __slots__ = ("accepted", "refused", "heartbeat_ack", "leave_ack", "left")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_ACK_FIELD_NUMBER: _ClassVar[int]
    LEAVE_ACK_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    accepted: JoinAccepted
    refused: JoinRefused
    heartbeat_ack: HeartbeatAck
    leave_ack: LeaveAck
    left: Leave
    def __init__(self, accepted: _Optional[_Union[JoinAccepted, _Mapping]] = ..., refused: _Optional[_Union[JoinRefused, _Mapping]] = ..., heartbeat_ack: _Optional[_Union[HeartbeatAck, _Mapping]] = ..., leave_ack: _Optional[_Union[LeaveAck, _Mapping]] = ..., left: _Optional[_Union[Leave, _Mapping]] = ...) -> None: ...

class JoinAccepted(_message.Message):
    __slots__ = ("session_id", "ray_address", "resource_name")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RAY_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_NAME_FIELD_NUMBER: _ClassVar[int]
    session_id: bytes
    ray_address: str
    resource_name: str
    def __init__(self, session_id: _Optional[bytes] = ..., ray_address: _Optional[str] = ..., resource_name: _Optional[str] = ...) -> None: ...

class JoinRefused(_message.Message):
    __slots__ = ("reason", "message")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    reason: RefuseReason
    message: str
    def __init__(self, reason: _Optional[_Union[RefuseReason, str]] = ..., message: _Optional[str] = ...) -> None: ...

class HeartbeatAck(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class LeaveAck(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
