from facesearch.v1 import face_pb2 as _face_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageInput(_message.Message):
    __slots__ = ("encoded_image", "aligned_face")
    ENCODED_IMAGE_FIELD_NUMBER: _ClassVar[int]
    ALIGNED_FACE_FIELD_NUMBER: _ClassVar[int]
    encoded_image: bytes
    aligned_face: bytes
    def __init__(self, encoded_image: _Optional[bytes] = ..., aligned_face: _Optional[bytes] = ...) -> None: ...

class EmbedStreamRequest(_message.Message):
    __slots__ = ("request_id", "input", "options")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    input: ImageInput
    options: _face_pb2.EmbedOptions
    def __init__(self, request_id: _Optional[str] = ..., input: _Optional[_Union[ImageInput, _Mapping]] = ..., options: _Optional[_Union[_face_pb2.EmbedOptions, _Mapping]] = ...) -> None: ...

class EmbedStreamResponse(_message.Message):
    __slots__ = ("request_id", "status", "faces", "image_size")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FACES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    status: _status_pb2.Status
    faces: _containers.RepeatedCompositeFieldContainer[_face_pb2.Face]
    image_size: _face_pb2.ImageSize
    def __init__(self, request_id: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., faces: _Optional[_Iterable[_Union[_face_pb2.Face, _Mapping]]] = ..., image_size: _Optional[_Union[_face_pb2.ImageSize, _Mapping]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("input", "options")
    INPUT_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    input: ImageInput
    options: _face_pb2.EmbedOptions
    def __init__(self, input: _Optional[_Union[ImageInput, _Mapping]] = ..., options: _Optional[_Union[_face_pb2.EmbedOptions, _Mapping]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("faces", "image_size")
    FACES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    faces: _containers.RepeatedCompositeFieldContainer[_face_pb2.Face]
    image_size: _face_pb2.ImageSize
    def __init__(self, faces: _Optional[_Iterable[_Union[_face_pb2.Face, _Mapping]]] = ..., image_size: _Optional[_Union[_face_pb2.ImageSize, _Mapping]] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("pack_name", "embedding_size", "detector_input_size", "execution_provider", "detector_file", "recognizer_file", "library_versions", "max_batch_size")
    class LibraryVersionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PACK_NAME_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_SIZE_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_INPUT_SIZE_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    DETECTOR_FILE_FIELD_NUMBER: _ClassVar[int]
    RECOGNIZER_FILE_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    pack_name: str
    embedding_size: int
    detector_input_size: _face_pb2.ImageSize
    execution_provider: str
    detector_file: str
    recognizer_file: str
    library_versions: _containers.ScalarMap[str, str]
    max_batch_size: int
    def __init__(self, pack_name: _Optional[str] = ..., embedding_size: _Optional[int] = ..., detector_input_size: _Optional[_Union[_face_pb2.ImageSize, _Mapping]] = ..., execution_provider: _Optional[str] = ..., detector_file: _Optional[str] = ..., recognizer_file: _Optional[str] = ..., library_versions: _Optional[_Mapping[str, str]] = ..., max_batch_size: _Optional[int] = ...) -> None: ...
