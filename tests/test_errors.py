"""The error tree: every ``CoveError`` is drawn in ``cove.errors``, and each becomes OpenAI's error JSON."""

from __future__ import annotations

import importlib
import pkgutil

import cove
from cove import errors
from cove.errors import ContextWindowExceeded, CoveError, InvalidRequest, RequestTooLarge, UpstreamError


def _subclasses(cls: type[CoveError]) -> set[type[CoveError]]:
    found = set(cls.__subclasses__())
    return found.union(*(_subclasses(sub) for sub in found)) if found else found


def test_the_docstring_draws_every_error() -> None:
    for module in pkgutil.walk_packages(cove.__path__, "cove."):
        if module.name != "cove.__main__":
            importlib.import_module(module.name)
    assert errors.__doc__ is not None
    drawn = {line.split("──")[1].split()[0] for line in errors.__doc__.splitlines() if "──" in line}
    assert {cls.__name__ for cls in _subclasses(CoveError)} == drawn


def test_error_bodies() -> None:
    too_large = RequestTooLarge(1024)
    assert (too_large.status_code, too_large.to_dict()) == (413, {"error": {
        "message": "The request body is larger than this server accepts (1024 bytes).",
        "type": "invalid_request_error", "param": None, "code": "request_too_large"}})
    overflow = ContextWindowExceeded("Too long.", param="input", code="context_length_exceeded")
    assert isinstance(overflow, InvalidRequest) and overflow.status_code == 400
    assert UpstreamError("down").to_dict()["error"]["type"] == "server_error"
