"""Run moto's S3 server (``python tests/moto_s3_server.py -H 127.0.0.1 -p PORT``).

Real S3 evaluates ``If-None-Match: *`` atomically; moto checks for the key and stores the
object in two unlocked steps, so under heavy load two conditional PUTs can both win. This
wrapper serialises moto's PUT handling so the server keeps S3's guarantee, which is what
datavc's exclusive create relies on.
"""

from __future__ import annotations

import threading
from typing import Any

from moto.s3.responses import S3Response
from moto.server import main

_LOCK = threading.Lock()
_put_object = S3Response.put_object


def _serialised_put(self: Any, *args: Any, **kwargs: Any) -> Any:
    with _LOCK:
        return _put_object(self, *args, **kwargs)


S3Response.put_object = _serialised_put  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
