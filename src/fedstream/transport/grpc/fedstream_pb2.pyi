from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hello(_message.Message):
    __slots__ = ("client_id", "token", "protocol")
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_FIELD_NUMBER: _ClassVar[int]
    client_id: str
    token: str
    protocol: str
    def __init__(
        self,
        client_id: _Optional[str] = ...,
        token: _Optional[str] = ...,
        protocol: _Optional[str] = ...,
    ) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("run_id", "heartbeat_s")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_S_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    heartbeat_s: float
    def __init__(
        self, run_id: _Optional[str] = ..., heartbeat_s: _Optional[float] = ...
    ) -> None: ...

class Refusal(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("data", "last", "sha256", "total_bytes")
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    last: bool
    sha256: str
    total_bytes: int
    def __init__(
        self,
        data: _Optional[bytes] = ...,
        last: _Optional[bool] = ...,
        sha256: _Optional[str] = ...,
        total_bytes: _Optional[int] = ...,
    ) -> None: ...

class Request(_message.Message):
    __slots__ = ("task_id", "run_id", "round", "kind", "header_json")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HEADER_JSON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    run_id: str
    round: int
    kind: str
    header_json: str
    def __init__(
        self,
        task_id: _Optional[str] = ...,
        run_id: _Optional[str] = ...,
        round: _Optional[int] = ...,
        kind: _Optional[str] = ...,
        header_json: _Optional[str] = ...,
    ) -> None: ...

class Reply(_message.Message):
    __slots__ = ("task_id", "run_id", "round", "kind", "header_json", "error")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    HEADER_JSON_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    run_id: str
    round: int
    kind: str
    header_json: str
    error: str
    def __init__(
        self,
        task_id: _Optional[str] = ...,
        run_id: _Optional[str] = ...,
        round: _Optional[int] = ...,
        kind: _Optional[str] = ...,
        header_json: _Optional[str] = ...,
        error: _Optional[str] = ...,
    ) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("sent_ms",)
    SENT_MS_FIELD_NUMBER: _ClassVar[int]
    sent_ms: int
    def __init__(self, sent_ms: _Optional[int] = ...) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("welcome", "request", "chunk", "refusal")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    REFUSAL_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    request: Request
    chunk: Chunk
    refusal: Refusal
    def __init__(
        self,
        welcome: _Optional[_Union[Welcome, _Mapping]] = ...,
        request: _Optional[_Union[Request, _Mapping]] = ...,
        chunk: _Optional[_Union[Chunk, _Mapping]] = ...,
        refusal: _Optional[_Union[Refusal, _Mapping]] = ...,
    ) -> None: ...

class ClientMessage(_message.Message):
    __slots__ = ("hello", "reply", "chunk", "heartbeat")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    reply: Reply
    chunk: Chunk
    heartbeat: Heartbeat
    def __init__(
        self,
        hello: _Optional[_Union[Hello, _Mapping]] = ...,
        reply: _Optional[_Union[Reply, _Mapping]] = ...,
        chunk: _Optional[_Union[Chunk, _Mapping]] = ...,
        heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ...,
    ) -> None: ...
