from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FileRequest(_message.Message):
    __slots__ = ("filename", "offset", "length", "chunk_size", "challenge")
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    filename: str
    offset: int
    length: int
    chunk_size: int
    challenge: str
    def __init__(self, filename: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., chunk_size: _Optional[int] = ..., challenge: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("data", "filename", "size", "sha256", "overwrite", "offset", "blake3", "holder", "proof")
    DATA_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    OVERWRITE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    BLAKE3_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    filename: str
    size: int
    sha256: str
    overwrite: bool
    offset: int
    blake3: str
    holder: str
    proof: str
    def __init__(self, data: _Optional[bytes] = ..., filename: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., overwrite: _Optional[bool] = ..., offset: _Optional[int] = ..., blake3: _Optional[str] = ..., holder: _Optional[str] = ..., proof: _Optional[str] = ...) -> None: ...

class LaneTicket(_message.Message):
    __slots__ = ("port", "ticket", "offset", "length", "size", "sha256", "blake3", "expires_in", "holder", "proof")
    PORT_FIELD_NUMBER: _ClassVar[int]
    TICKET_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    BLAKE3_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    HOLDER_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    port: int
    ticket: bytes
    offset: int
    length: int
    size: int
    sha256: str
    blake3: str
    expires_in: float
    holder: str
    proof: str
    def __init__(self, port: _Optional[int] = ..., ticket: _Optional[bytes] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ..., blake3: _Optional[str] = ..., expires_in: _Optional[float] = ..., holder: _Optional[str] = ..., proof: _Optional[str] = ...) -> None: ...

class UploadStatus(_message.Message):
    __slots__ = ("ok", "message", "filename", "size", "sha256")
    OK_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    message: str
    filename: str
    size: int
    sha256: str
    def __init__(self, ok: _Optional[bool] = ..., message: _Optional[str] = ..., filename: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...
