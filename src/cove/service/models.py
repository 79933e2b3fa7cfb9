"""Models: what ``/v1/models`` lists, from the upstream registry's catalogue."""

from __future__ import annotations

from cove.errors import NotFound
from cove.service.objects import Model, ObjectList
from cove.upstream.registry import ModelRegistry


class ModelService:
    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    async def list_models(self) -> ObjectList[Model]:
        return ObjectList(data=[Model.model_validate(entry) for entry in await self.registry.list_models()])

    async def get(self, model_id: str) -> Model:
        for model in (await self.list_models()).data:
            if model.id == model_id:
                return model
        raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
