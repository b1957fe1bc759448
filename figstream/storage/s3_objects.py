"""The aws profile's object store: :class:`ObjectStore` on one S3 bucket, through boto3.

Keys follow the local store's rules (:func:`check_key`, :func:`check_prefix`), so a key that
works on one profile works on the other. Each method is one S3 call or a bounded few:

=============  ==================================================================================
``put``        ``PutObject``: atomic by S3's nature (a reader sees the old object or the new one)
``get``        ``GetObject``
``writer``     multipart upload in :data:`PART_SIZE` parts (``CreateMultipartUpload``,
               ``UploadPart``, ``CompleteMultipartUpload``); an object smaller than one part is
               one ``PutObject``. An exception inside the block aborts the upload
               (``AbortMultipartUpload``) and leaves no object, and the old one untouched
``size``       ``HeadObject``
``open``       ``HeadObject``, then ranged ``GetObject`` calls pinned to the version (or, in a
               bucket without versioning, the ETag) seen at open
``exists``     ``HeadObject``
``list``       ``ListObjectsV2`` with ``Prefix`` and ``StartAfter``, page by page, stopping at
               ``limit``: S3 lists in UTF-8 byte order, which is the local store's order
``delete``     ``DeleteObject`` (a missing key is not an error, as locally)
=============  ==================================================================================

Differences from :class:`LocalObjectStore`, both S3's nature: a key may also be a prefix of
other keys (``a/b`` and ``a/b/c``), which a directory tree cannot hold; and a reader that
:meth:`open` ed an object keeps reading that object after it is replaced only when the bucket
has versioning on (``figstream aws setup`` turns it on, with a lifecycle rule that expires
old versions after a day and aborts multipart uploads left behind for a day: the bucket's
setup lives with the other infrastructure in ``figstream.cli.aws``, so the roles that only
read and write objects need no bucket-administration permission). Without
versioning such a reader fails with :class:`ObjectChangedError` rather than mixing two objects.

Throttling and 5xx are retried by botocore's retry mode (``AwsConfig.client``); an
``AccessDenied`` or a missing bucket surfaces as botocore's ``ClientError``.

Bad inputs tried (see ``tests/figstream/storage/test_objectstore.py``, which runs on both
stores, and ``tests/figstream/storage/test_s3_objects.py``): invalid keys and prefixes, reading
a missing key or a prefix, ``limit`` of 0 and below, listings across pages (over 1,000 keys),
an exception inside ``writer`` before and after the first part was uploaded, an object
replaced while a reader has it open, with and without versioning.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

from figstream.storage.aws import AwsConfig
from figstream.storage.objects import ObjectStore, check_key, check_prefix

if TYPE_CHECKING:
    import pyarrow as pa

PART_SIZE = 8 << 20  # S3 needs >= 5 MiB for every part but the last
LIST_PAGE = 1000  # ListObjectsV2's maximum page
_MISSING_CODES = {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}
_CHANGED_CODES = {"412", "PreconditionFailed"}


class ObjectChangedError(OSError):
    """An object was replaced while a reader had it open (a bucket without versioning)."""


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


class S3ObjectStore(ObjectStore):
    """An :class:`ObjectStore` over the bucket ``config.bucket_name``."""

    def __init__(self, config: AwsConfig, part_size: int = PART_SIZE) -> None:
        if part_size < 5 << 20:
            raise ValueError(f"part_size must be at least 5 MiB (S3's minimum), got {part_size}")
        self.config = config
        self.bucket = config.bucket_name
        self.part_size = part_size

    def __repr__(self) -> str:
        return f"S3ObjectStore('s3://{self.bucket}')"

    @property
    def _s3(self) -> Any:
        return self.config.client("s3")

    def _missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"no object {key!r} in {self}")

    def put(self, key: str, data: bytes | bytearray | memoryview) -> None:
        self._s3.put_object(Bucket=self.bucket, Key=check_key(key), Body=bytes(data))

    def get(self, key: str) -> bytes:
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=check_key(key))
        except self._s3.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                raise self._missing(key) from None
            raise
        with contextlib.closing(response["Body"]) as body:
            return body.read()

    @contextlib.contextmanager
    def writer(self, key: str) -> Iterator[BinaryIO]:
        sink = _MultipartWriter(self, check_key(key))
        try:
            yield sink  # type: ignore[misc]
        except BaseException:
            sink.abort()
            raise
        sink.complete()

    def _head(self, key: str) -> dict[str, Any]:
        try:
            return self._s3.head_object(Bucket=self.bucket, Key=check_key(key))
        except self._s3.exceptions.ClientError as exc:
            if _code(exc) in _MISSING_CODES:
                raise self._missing(key) from None
            raise

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def open(self, key: str) -> pa.NativeFile:
        """A seekable reader of the object as it is now; each read is one ranged GET."""
        import pyarrow as pa

        head = self._head(key)
        reader = _RangeReader(self, key, int(head["ContentLength"]), head)
        return pa.PythonFile(reader, mode="r")

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str = "", start_after: str = "", limit: int | None = None) -> list[str]:
        check_prefix(prefix)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        keys: list[str] = []
        token: str | None = None
        while limit is None or len(keys) < limit:
            page = LIST_PAGE if limit is None else min(LIST_PAGE, limit - len(keys))
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page}
            if token:
                args["ContinuationToken"] = token
            elif start_after:
                args["StartAfter"] = start_after
            response = self._s3.list_objects_v2(**args)
            keys.extend(item["Key"] for item in response.get("Contents", ()))
            if not response.get("IsTruncated"):
                break
            token = response["NextContinuationToken"]
        return keys

    def delete(self, key: str) -> None:
        self._s3.delete_object(Bucket=self.bucket, Key=check_key(key))


class _MultipartWriter(io.RawIOBase):
    """Buffers one part, uploads full parts as they fill; completes or aborts at the end."""

    def __init__(self, store: S3ObjectStore, key: str) -> None:
        super().__init__()
        self._store, self._key = store, key
        self._buffer = bytearray()
        self._parts: list[dict[str, Any]] = []
        self._upload_id: str | None = None
        self._position = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError(f"write to {self._key!r} after its writer finished")
        view = memoryview(data).cast("B")
        self._buffer += view
        self._position += len(view)
        while len(self._buffer) >= self._store.part_size:
            chunk = bytes(self._buffer[: self._store.part_size])
            del self._buffer[: self._store.part_size]
            self._upload(chunk)
        return len(view)

    def _upload(self, chunk: bytes) -> None:
        s3, bucket = self._store._s3, self._store.bucket
        if self._upload_id is None:
            created = s3.create_multipart_upload(Bucket=bucket, Key=self._key)
            self._upload_id = created["UploadId"]
        number = len(self._parts) + 1
        part = s3.upload_part(
            Bucket=bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=chunk
        )
        self._parts.append({"PartNumber": number, "ETag": part["ETag"]})

    def complete(self) -> None:
        s3, bucket = self._store._s3, self._store.bucket
        try:
            if self._upload_id is None:
                s3.put_object(Bucket=bucket, Key=self._key, Body=bytes(self._buffer))
                return
            if self._buffer:
                self._upload(bytes(self._buffer))
            s3.complete_multipart_upload(
                Bucket=bucket,
                Key=self._key,
                UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        except BaseException:
            self.abort()
            raise
        finally:
            self._buffer = bytearray()
            super().close()

    def abort(self) -> None:
        self._buffer = bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self._store._s3.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self._key, UploadId=upload_id
            )
        super().close()

    def close(self) -> None:
        # pyarrow's ParquetWriter closes its sink when it finishes; the object is completed by
        # the store's writer block, which decides between complete and abort.
        pass


class _RangeReader(io.RawIOBase):
    """A seekable file over one version of an object, each read a ranged GET."""

    def __init__(self, store: S3ObjectStore, key: str, size: int, head: dict[str, Any]) -> None:
        super().__init__()
        self._store, self._key, self._size = store, key, size
        version = head.get("VersionId")
        self._pin: dict[str, str] = (
            {"VersionId": version} if version and version != "null" else {"IfMatch": head["ETag"]}
        )
        self._position = 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"negative seek position {base + offset}")
        self._position = base + offset
        return self._position

    def read(self, size: int = -1) -> bytes:
        with self._lock:
            start = self._position
            end = self._size if size is None or size < 0 else min(self._size, start + size)
            if end <= start:
                return b""
            data = self._get(start, end)
            self._position = start + len(data)
            return data

    def readall(self) -> bytes:
        return self.read(-1)

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        memoryview(buffer)[: len(data)] = data
        return len(data)

    def _get(self, start: int, end: int) -> bytes:
        s3 = self._store._s3
        try:
            response = s3.get_object(
                Bucket=self._store.bucket, Key=self._key, Range=f"bytes={start}-{end - 1}",
                **self._pin,
            )  # fmt: skip
        except s3.exceptions.ClientError as exc:
            if _code(exc) in _CHANGED_CODES or (
                "VersionId" in self._pin and _code(exc) in _MISSING_CODES
            ):
                raise ObjectChangedError(
                    f"{self._key!r} in {self._store} was replaced or deleted while open "
                    "(a bucket without versioning cannot keep the object a reader opened)"
                ) from None
            raise
        with contextlib.closing(response["Body"]) as body:
            return body.read()
