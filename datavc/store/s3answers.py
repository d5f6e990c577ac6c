"""What an S3 server's answers to PUTs say, and when a PUT should wait for ``100 Continue``.

The backend (:mod:`.backend`) asks these of s3fs's answers: whether a PUT's answer confirms
that the store keeps exactly the bytes sent (then no HEAD or GET checks it again), whether an
error is the ``412`` of an exclusive create, and, for botocore, which PUT bodies to send only
after the server's ``100 Continue``. No requests are made here.
"""

from __future__ import annotations

import io
import os
from typing import Any

# botocore sends every PUT body only after the server's ``100 Continue``: a round trip more
# per PUT, to spare sending a body the server refuses. A body smaller than this goes at once
# (and a larger one too, once the store has taken one: see ExpectContinue).
EXPECT_FROM = 8 << 20


def answer_confirms(answer: object, data: bytes) -> bool:
    """Whether an S3 PUT's answer shows that the store keeps exactly ``data``: its CRC-32
    checksum (which botocore sends with the body, and which S3 checks against what it
    received, answering BadDigest on a mismatch) is that of ``data``; or, where the answer
    has no checksum, its ETag is the MD5 of ``data`` (as S3 and the servers compatible with
    it make a single PUT's ETag, unless the object is encrypted with a KMS or customer key).
    False says only "not confirmed": the caller then checks the size, as for any store."""
    if not isinstance(answer, dict):
        return False
    crc = answer.get("ChecksumCRC32")
    if isinstance(crc, str) and crc:
        import base64
        import zlib

        return crc == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    etag = str(answer.get("ETag") or "").strip('"')
    if len(etag) != 32:
        return False  # from a multipart upload ("-N" at the end), or none
    import hashlib

    return etag == hashlib.md5(data, usedforsecurity=False).hexdigest()


class ExpectContinue:
    """A botocore ``before-call`` handler, run after the one that asks for ``100 Continue``
    before every PUT body: it keeps the ask only where it may pay. The ask spares the
    sending of a body the server refuses, and lets a refusal arrive as the server's answer
    (a large body refused halfway is seen as a dropped connection, retried as one), at the
    cost of a round trip per PUT. A body under ``EXPECT_FROM`` costs less to send than that
    round trip, and is sent whole before an answer; a larger one is sent at once after the
    store has taken one (:attr:`taken`): the refusals the ask is for (wrong credentials or
    permissions, a missing bucket, another region) hold for every PUT of a process, so they
    are settled by then. Packs stored at once before the first is taken each still ask."""

    def __init__(self) -> None:
        self.taken = False  # the store has taken a body of EXPECT_FROM or more

    def __call__(self, params: dict[str, Any], **_: Any) -> None:
        headers = params.get("headers")
        if not headers or "Expect" not in headers:
            return
        size = _body_size(params.get("body"))
        if size is not None and (size < EXPECT_FROM or self.taken):
            del headers["Expect"]


def _body_size(body: object) -> int | None:
    """The bytes left to send of a request body (botocore makes bytes a BytesIO)."""
    if isinstance(body, (bytes, bytearray)):
        return len(body)
    if isinstance(body, io.IOBase) and body.seekable():
        here = body.tell()
        end = body.seek(0, os.SEEK_END)
        body.seek(here)
        return end - here
    return None


def precondition_failed(err: OSError) -> bool:
    """Whether s3fs's error is S3's ``412 Precondition Failed``: for a PUT whose only
    precondition is ``If-None-Match: *``, the key exists (s3fs says FileExistsError only
    when the answer names that condition, which SeaweedFS's does not)."""
    cause = err.__cause__
    response = getattr(cause, "response", None)
    if not isinstance(response, dict):
        return False
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return bool(status == 412 or response.get("Error", {}).get("Code") == "PreconditionFailed")
