"""The model service: the registry's catalogue as ``Model`` objects, and ``model_not_found``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cove.errors import NotFound
from cove.service.models import ModelService
from cove.service.objects import Model


class Catalogue:
    async def list_models(self) -> list[dict[str, Any]]:
        return [{"id": "small", "object": "model", "created": 1_700_000_000, "owned_by": "cove"}]


def test_list_and_get() -> None:
    service = ModelService(Catalogue())  # type: ignore[arg-type]
    listed = asyncio.run(service.list_models())
    assert listed.model_dump() == {"object": "list", "data": [
        {"id": "small", "object": "model", "created": 1_700_000_000, "owned_by": "cove"}]}
    assert asyncio.run(service.get("small")) == Model(id="small", created=1_700_000_000, owned_by="cove")
    with pytest.raises(NotFound) as caught:
        asyncio.run(service.get("large"))
    assert (caught.value.code, caught.value.param) == ("model_not_found", "model")
