"""The embedded broker's put is atomic: a consumer sees a message whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection

from workers.fs_transport import Transport


def channel(folder: Path) -> Any:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    connection = Connection("filesystem://", transport=Transport, transport_options=options)
    return connection, connection.default_channel


def test_a_message_is_invisible_until_it_is_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection, chan = channel(tmp_path)
    seen_while_writing: list[list[str]] = []
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        seen_while_writing.append(sorted(p.name for p in tmp_path.iterdir()))
        with pytest.raises(Empty):
            chan._get("jobs")  # a consumer polling right now finds nothing half-written
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    chan._put("jobs", {"body": "x" * 100_000})
    [names] = seen_while_writing
    assert len(names) == 1
    assert names[0].startswith(".")
    assert names[0].endswith(".tmp")
    assert chan._get("jobs") == {"body": "x" * 100_000}
    assert list(tmp_path.iterdir()) == []
    connection.release()
