"""Where a hosted tool runs, as a request says it: OpenAI's ``container_auto``, ``container_reference``
and ``local`` environments (the shell tool's ``environment``), and the code interpreter's ``container``
(``"auto"``, a container id, or ``{"type": "auto", ...}``), which ``apply_patch`` also takes as
Cove's extension.

The schemas check shapes; ``check_environment`` checks what they cannot: a network policy's
domains and secrets (with the egress policy's own rules, so a request and ``POST /v1/containers``
refuse the same things with the same messages). Its ``file_ids`` are the service's to check (files
belong to projects; ``service/responses.py``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag

from cove.egress.policy import parse_network_policy

MemoryLimit = Literal["1g", "4g", "16g", "64g"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SkillReference(_Strict):
    """A skill of the project's ``/v1/skills``, at ``version`` (a number or ``latest``; else its default)."""

    type: Literal["skill_reference"]
    skill_id: str
    version: str | int | None = None


class InlineSkillSource(_Strict):
    type: Literal["base64"]
    media_type: Literal["application/zip"]
    data: str


class InlineSkill(_Strict):
    """A skill given in the request: a base64 zip of its folder."""

    type: Literal["inline"]
    name: str
    description: str
    source: InlineSkillSource


class LocalSkill(_Strict):
    """A skill on the client's machine (``local`` environment): the model is told of it; the client runs it."""

    name: str
    description: str
    path: str


class SkillNote(BaseModel):
    """A skill as the model is told of it: what it is for and where its ``SKILL.md`` is."""

    name: str
    description: str
    path: str


class _Mounted(_Strict):
    """An environment whose container may have skills mounted."""

    _mounted: list[SkillNote] = PrivateAttr(default_factory=list)
    """The skills in the container, set by the service once it knows them (a reference names only an
    id; a named container may have skills from its create): what the shell tool tells the model."""

    @property
    def mounted(self) -> list[SkillNote]:
        return self._mounted

    def mount(self, skills: list[SkillNote]) -> None:
        self._mounted = skills


class ContainerAuto(_Mounted):
    """A container Cove picks: the chain's or conversation's, else a new one with these options."""

    type: Literal["container_auto"]
    file_ids: list[str] | None = None
    memory_limit: MemoryLimit | None = None
    network_policy: dict[str, Any] | None = None
    """OpenAI's ``network_policy``; checked by the egress policy's rules in ``check_environment``."""
    skills: list[Annotated[SkillReference | InlineSkill, Field(discriminator="type")]] | None = None


class ContainerReference(_Mounted):
    type: Literal["container_reference"]
    container_id: str


class LocalEnvironment(_Strict):
    """The client's own machine: the tool's calls go back to the client."""

    type: Literal["local"]
    skills: list[LocalSkill] | None = None


class AutoContainer(_Strict):
    """``{"type": "auto", ...}``: the ``container_auto`` options in the code interpreter's own spelling."""

    type: Literal["auto"]
    file_ids: list[str] | None = None
    memory_limit: MemoryLimit | None = None
    network_policy: dict[str, Any] | None = None


Container = Annotated[Annotated[str, Tag("id")] | Annotated[AutoContainer, Tag("auto")],
                      Discriminator(lambda value: "id" if isinstance(value, str) else "auto")]
"""A ``container`` field: ``"auto"``, a container id, or ``{"type": "auto", ...}`` with options."""


def container_auto(container: str | AutoContainer) -> ContainerAuto | None:
    """A ``container`` field's options as ``container_auto``; None when it names a container."""
    if isinstance(container, str):
        return ContainerAuto(type="container_auto") if container == "auto" else None
    return ContainerAuto.model_validate({**container.model_dump(exclude_none=True), "type": "container_auto"})


def container_environment(container: str | AutoContainer) -> dict[str, Any]:
    """A ``container`` field as the environment it asks for (``container_auto`` or ``container_reference``)."""
    auto = container_auto(container)
    if auto is not None:
        return auto_options(auto)
    assert isinstance(container, str)
    return {"type": "container_reference", "container_id": container}


def check_environment(environment: ContainerAuto | ContainerReference | LocalEnvironment | None, param: str) -> None:
    if not isinstance(environment, ContainerAuto):
        return
    if environment.network_policy is not None:
        parse_network_policy(environment.network_policy, f"{param}.network_policy")


def auto_options(environment: ContainerAuto) -> dict[str, Any]:
    """The ``container_auto`` options a new container is made with (as OpenAI's wire shape)."""
    return {"type": "container_auto", **environment.model_dump(exclude_none=True, exclude={"type"})}
