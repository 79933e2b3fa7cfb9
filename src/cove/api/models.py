"""``/v1/models``: the models this server can answer with."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from cove.api.auth import project_of
from cove.errors import NotFound
from cove.upstream.registry import ModelRegistry

router = APIRouter(prefix="/v1/models", tags=["models"])
Project = Annotated[str, Depends(project_of)]


def _registry(request: Request) -> ModelRegistry:
    registry: ModelRegistry = request.app.state.models
    return registry


@router.get("")
async def list_models(request: Request, _project: Project) -> dict[str, Any]:
    return {"object": "list", "data": await _registry(request).list_models()}


@router.get("/{model_id:path}")
async def get_model(model_id: str, request: Request, _project: Project) -> dict[str, Any]:
    for model in await _registry(request).list_models():
        if model["id"] == model_id:
            return model
    raise NotFound(f"The model '{model_id}' does not exist.", param="model", code="model_not_found")
