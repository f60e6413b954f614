"""kombu's `filesystem://` transport with an atomic put (the embedded setting's broker).

kombu creates a message file under its final name and then writes it, while a consumer may
already move and read it: the consumer then reads an empty file, fails to decode it, and
the worker stops with "Unrecoverable error: JSONDecodeError" (celery/kombu#1551, open).
Here a message is written under a name consumers ignore and renamed into place, so it is
either absent or complete.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    # The signature is kombu's filesystem one; the type stubs of its two bases disagree.
    def _put(self, queue: str, payload: dict[str, Any], **kwargs: Any) -> None:  # type: ignore[override]
        """Put `payload` onto `queue`: write a hidden file, fsync, rename it into place."""
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        hidden = os.path.join(self.data_folder_out, f".{name}.tmp")  # never matches a queue
        try:
            with open(hidden, "wb") as out:
                out.write(str_to_bytes(dumps(payload)))
                out.flush()
                os.fsync(out.fileno())
            os.replace(hidden, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
