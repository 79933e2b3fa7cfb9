"""The ``apply_patch`` tool: V4A file operations, applied by the client as on OpenAI.

By default a call ends the response as an ``apply_patch_call`` (the agents SDK's ``ApplyPatchTool``
applies it with its editor) and the client continues with an ``apply_patch_call_output``. A tool
that names a ``container`` (Cove's extension, spelled as the code interpreter's) is hosted: the
operation is applied inside that container, and a failed one is an output with status ``failed``
and a message saying which hunk or context did not match, so the model can retry.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from openai.types.responses import ApplyPatchToolParam

from cove.ids import new_id
from cove.tools.base import HostedTool, ToolArgumentsError, ToolConfig, ToolRun, parse_arguments
from cove.tools.environment import AutoContainer, Container, check_environment, container_auto, container_environment
from cove.tools.v4a import PatchError, apply_operation
from cove.tools.workspace import Workspace

_OPERATIONS = ("create_file", "update_file", "delete_file")
_DESCRIPTION = (
    "Create, update or delete a file {where} with a V4A diff. create_file: every line of "
    "`diff` starts with '+'. update_file: hunks start with '@@ <a line near the change>', then lines "
    "starting with ' ' (context), '-' (remove) or '+' (add). delete_file: no diff.")


class ApplyPatchConfig(ToolConfig):
    type: Literal["apply_patch"]
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None
    container: Container | None = None
    """Cove's extension: apply patches in this container (``"auto"``, an id, ``{"type": "auto", ...}``)
    instead of returning the calls to the client."""


class ApplyPatchTool(HostedTool):
    types = ("apply_patch",)
    config = ApplyPatchConfig
    sdk_type: ClassVar[type | None] = ApplyPatchToolParam
    extensions: ClassVar[tuple[str, ...]] = ("container",)
    name = "apply_patch"
    call_type = "apply_patch_call"
    output_type = "apply_patch_call_output"
    native_form: ClassVar[dict[str, Any] | None] = {"type": "apply_patch"}

    def hosted(self, config: ToolConfig) -> bool:
        return self._container(config) is not None

    def environment(self, config: ToolConfig) -> dict[str, Any] | None:
        container = self._container(config)
        return container_environment(container) if container is not None else None

    def check(self, config: ToolConfig, param: str) -> None:
        container = self._container(config)
        if container is not None:
            check_environment(container_auto(container), f"{param}.container")

    @staticmethod
    def _container(config: ToolConfig) -> str | AutoContainer | None:
        assert isinstance(config, ApplyPatchConfig)
        return config.container

    def client_item(self, call_id: str, arguments: str) -> dict[str, Any]:
        """The call for the client's editor. Arguments that do not fit are passed on as the model wrote
        them: the client owns the tool and decides (the agents SDK raises ``ModelBehaviorError``)."""
        args = parse_arguments(arguments)
        try:
            operation = _operation(args)
        except ToolArgumentsError:
            operation = _given(args)
        return {"id": new_id("apc"), "type": self.call_type, "call_id": call_id, "operation": operation,
                "status": "completed"}

    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        call = self.client_item(call_id, arguments)  # the operation as the model wrote it
        output = {"id": new_id("apo"), "type": self.output_type, "call_id": call_id, "status": "failed",
                  "output": message}
        return call, output

    def function(self, config: ToolConfig) -> dict[str, Any]:
        hosted = self.hosted(config)
        where = "in the Linux container" if hosted else "in the user's workspace"
        return {"type": "function", "name": self.name, "description": _DESCRIPTION.format(where=where),
                "parameters": {"type": "object", "properties": {
                "type": {"type": "string", "enum": list(_OPERATIONS)},
                "path": {"type": "string",
                         "description": "Absolute path in the container." if hosted else "Path of the file."},
                "diff": {"type": "string", "description": "The V4A diff (not for delete_file)."}},
                    "required": ["type", "path"]}}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        operation = _operation(arguments)
        await workspace.container_id()
        return {"id": new_id("apc"), "type": self.call_type, "call_id": call_id, "operation": operation,
                "status": "in_progress"}

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        try:
            message = await apply_operation(run.workspace, call["operation"])
            status = "completed"
        except PatchError as exc:
            message, status = str(exc), "failed"
        output = {"id": new_id("apo"), "type": self.output_type, "call_id": call["call_id"], "status": status,
                  "output": message}
        await run.events.item(output)
        return output

    def output_text(self, output: dict[str, Any]) -> str:
        prefix = "" if output.get("status") == "completed" else "Failed: "
        return prefix + str(output.get("output") or "")


def _given(arguments: dict[str, Any]) -> dict[str, Any]:
    """The operation as the model wrote it: flat, or nested as ``operation`` like the item."""
    nested = arguments.get("operation")
    return nested if isinstance(nested, dict) else arguments


def _operation(arguments: dict[str, Any]) -> dict[str, Any]:
    """The operation the model asked for, checked."""
    operation = _given(arguments)
    kind, path = operation.get("type"), operation.get("path")
    if kind not in _OPERATIONS or not isinstance(path, str) or not path:
        raise ToolArgumentsError(f"`type` must be one of {', '.join(_OPERATIONS)} and `path` a file path.")
    if kind != "delete_file" and not isinstance(operation.get("diff"), str):
        raise ToolArgumentsError(f"{kind} needs a `diff`.")
    return {"type": kind, "path": path, **({"diff": operation["diff"]} if kind != "delete_file" else {})}
