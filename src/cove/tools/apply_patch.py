"""The hosted ``apply_patch`` tool: V4A file operations applied inside the response's container.

A failed operation is an ``apply_patch_call_output`` with status ``failed`` and a message saying
which hunk or context did not match, so the model can retry.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from openai.types.responses import ApplyPatchToolParam

from cove.ids import new_id
from cove.tools.base import HostedTool, ToolArgumentsError, ToolConfig, ToolRun
from cove.tools.v4a import PatchError, apply_operation
from cove.tools.workspace import Workspace

_OPERATIONS = ("create_file", "update_file", "delete_file")
_DESCRIPTION = (
    "Create, update or delete a file in the Linux container with a V4A diff. create_file: every line of "
    "`diff` starts with '+'. update_file: hunks start with '@@ <a line near the change>', then lines "
    "starting with ' ' (context), '-' (remove) or '+' (add). delete_file: no diff.")


class ApplyPatchConfig(ToolConfig):
    type: Literal["apply_patch"]
    allowed_callers: list[Literal["direct", "programmatic"]] | None = None


class ApplyPatchTool(HostedTool):
    types = ("apply_patch",)
    config = ApplyPatchConfig
    sdk_type: ClassVar[type | None] = ApplyPatchToolParam
    name = "apply_patch"
    call_type = "apply_patch_call"
    output_type = "apply_patch_call_output"
    native_form: ClassVar[dict[str, Any] | None] = {"type": "apply_patch"}

    def function(self, config: ToolConfig) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": _DESCRIPTION, "parameters": {
            "type": "object", "properties": {
                "type": {"type": "string", "enum": list(_OPERATIONS)},
                "path": {"type": "string", "description": "Absolute path in the container."},
                "diff": {"type": "string", "description": "The V4A diff (not for delete_file)."}},
            "required": ["type", "path"]}}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        nested = arguments.get("operation")
        operation: dict[str, Any] = nested if isinstance(nested, dict) else arguments
        kind, path = operation.get("type"), operation.get("path")
        if kind not in _OPERATIONS or not isinstance(path, str) or not path:
            raise ToolArgumentsError(f"`type` must be one of {', '.join(_OPERATIONS)} and `path` a file path.")
        if kind != "delete_file" and not isinstance(operation.get("diff"), str):
            raise ToolArgumentsError(f"{kind} needs a `diff`.")
        clean = {"type": kind, "path": path, **({"diff": operation["diff"]} if kind != "delete_file" else {})}
        await workspace.container_id()
        return {"id": new_id("apc"), "type": self.call_type, "call_id": call_id, "operation": clean,
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
