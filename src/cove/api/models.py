"""``/v1/models``: the models this server can answer with."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from cove.api.auth import project_of
from cove.service.models import ModelService
from cove.service.objects import Model, ObjectList

router = APIRouter(prefix="/v1/models", tags=["models"])
Project = Annotated[str, Depends(project_of)]


def _service(request: Request) -> ModelService:
    service: ModelService = request.app.state.models
    return service


@router.get("")
async def list_models(request: Request, _project: Project) -> ObjectList[Model]:
    return await _service(request).list_models()


@router.get("/{model_id:path}")
async def get_model(model_id: str, request: Request, _project: Project) -> Model:
    return await _service(request).get(model_id)
