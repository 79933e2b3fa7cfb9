"""The computer tool: ``computer_use_preview`` (a display size and an environment) and the GA ``computer``.

By default it is the client's, as on OpenAI: a call ends the response as a ``computer_call`` and the
client answers with a ``computer_call_output`` holding its screenshot. A tool that names a
``container`` (Cove's extension, spelled as ``apply_patch`` spells it), or a request that also carries a
hosted ``shell``, makes it hosted: Cove performs the call's actions on the container's display, takes the
settled screenshot, appends the ``computer_call_output`` itself and lets the model go on.

A call with ``pending_safety_checks`` (a Responses upstream's computer-use model raises them) is not
performed: the response ends with it, and the client's ``computer_call_output`` for it must carry
exactly those checks in ``acknowledged_safety_checks``; Cove then performs it and goes on
(``released``, run by the loop before the next model turn).

A chat model is offered a ``computer`` function whose arguments are one OpenAI action object (or
``{"actions": [...]}``), and reads each screenshot back as an image in a user message after the
tool's text result: most chat servers take images only in user messages.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Iterable
from typing import Any, ClassVar, Literal, get_args

from openai.types.responses import ComputerToolParam, ComputerUsePreviewToolParam
from openai.types.responses.response_computer_tool_call import Action
from pydantic import BaseModel, PrivateAttr, ValidationError

from cove.errors import InvalidRequest
from cove.ids import new_id
from cove.sandbox.base import Screen
from cove.tools.base import HostedTool, Tool, ToolArgumentsError, ToolConfig, ToolRun, parse_arguments
from cove.tools.environment import Container, check_environment, container_auto, container_environment
from cove.tools.shell import ShellTool
from cove.tools.workspace import Workspace

NAME = "computer"
MAX_ACTIONS = 64
"""Actions in one call's batch: a model that wants more makes another call."""
MIN_SIDE, MAX_SIDE = 64, 4096
"""Display sizes a hosted display takes (those of ``LinuxSandbox.display``), checked before anything runs."""
_ACTION_MODELS: dict[str, type[BaseModel]] = {get_args(model.model_fields["type"].annotation)[0]: model
                                               for model in get_args(get_args(Action)[0])}
"""OpenAI's action types by their ``type``: the SDK's union has no discriminator pydantic uses."""
ACTION_TYPES = ("click", "double_click", "drag", "keypress", "move", "scroll", "type", "wait", "screenshot")
_DESCRIPTION = (
    "Use a computer ({environment}) by looking at screenshots and acting on the screen, "
    "{width}x{height} pixels, origin at the top left. Each call performs one action{batch} and returns "
    "a screenshot of the screen afterwards. Actions: click (x, y, button: left, "
    "right, wheel, back or forward), double_click (x, y), drag (path: [{{x, y}}, ...]), keypress (keys, e.g. "
    "[\"CTRL\", \"L\"] or [\"ENTER\"]), move (x, y), scroll (x, y, scroll_x, scroll_y in pixels), type "
    "(text), wait, screenshot.")


class _Computer(ToolConfig):
    """What both computer tools' entries have."""

    container: Container | None = None
    """Cove's extension: perform the calls on this container's display (``"auto"``, an id, or
    ``{"type": "auto", ...}``) instead of returning them to the client."""
    _beside_shell: bool = PrivateAttr(default=False)
    """The request also carries a hosted shell: the calls run in its container (``ComputerTool.settle``)."""


class ComputerConfig(_Computer):
    type: Literal["computer"]


class ComputerUsePreviewConfig(_Computer):
    type: Literal["computer_use_preview"]
    display_width: int
    display_height: int
    environment: Literal["windows", "mac", "linux", "ubuntu", "browser"]


class ComputerTool(HostedTool):
    """The GA ``computer`` tool: calls carry ``actions`` (a batch), the display has Cove's default size."""

    types: ClassVar[tuple[str, ...]] = ("computer",)
    config: ClassVar[type[ToolConfig]] = ComputerConfig
    sdk_type: ClassVar[type | None] = ComputerToolParam
    extensions: ClassVar[tuple[str, ...]] = ("container",)
    name = NAME
    call_type = "computer_call"
    output_type = "computer_call_output"
    native_form: ClassVar[dict[str, Any] | None] = {"type": "computer"}
    owns_items: ClassVar[bool] = False
    """The preview tool reads both tools' items back (the items are the same)."""
    batched: ClassVar[bool] = True
    """Whether its calls carry ``actions`` (GA) rather than one ``action`` (preview)."""

    # -- where it runs ---------------------------------------------------------------------------
    def settle(self, config: ToolConfig, entries: list[tuple[Tool, ToolConfig]]) -> None:
        assert isinstance(config, _Computer)
        config._beside_shell = config.container is None and any(
            isinstance(tool, ShellTool) and tool.hosted(other) for tool, other in entries)

    def hosted(self, config: ToolConfig) -> bool:
        assert isinstance(config, _Computer)
        return config.container is not None or config._beside_shell

    def environment(self, config: ToolConfig) -> dict[str, Any] | None:
        assert isinstance(config, _Computer)
        return container_environment(config.container) if config.container is not None else None

    def check(self, config: ToolConfig, param: str) -> None:
        assert isinstance(config, _Computer)
        if config.container is not None:
            check_environment(container_auto(config.container), f"{param}.container")
        screen = self.screen(config)
        for field, value in (("display_width", screen.width), ("display_height", screen.height)):
            if not 1 <= value <= MAX_SIDE or (self.hosted(config) and value < MIN_SIDE):
                low = MIN_SIDE if self.hosted(config) else 1
                raise InvalidRequest(f"Invalid value for '{param}.{field}': expected {low} to {MAX_SIDE}.",
                                     param=f"{param}.{field}", code="invalid_value")

    def screen(self, config: ToolConfig) -> Screen:
        """The display the tool asks for (its first use starts the container's display at this size)."""
        return Screen()

    # -- what the model sees -----------------------------------------------------------------------
    def model_tools(self, config: ToolConfig, native: bool) -> list[dict[str, Any]]:
        return [self.native_tool(config) if native else self.function(config)]

    def native_tool(self, config: ToolConfig) -> dict[str, Any]:
        """The tool as a Responses upstream takes it (without Cove's extension)."""
        return {"type": "computer"}

    def function(self, config: ToolConfig) -> dict[str, Any]:
        screen = self.screen(config)
        point = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                 "required": ["x", "y"]}
        action: dict[str, Any] = {"type": "object", "properties": {
            "type": {"type": "string", "enum": list(ACTION_TYPES)},
            "x": {"type": "integer"}, "y": {"type": "integer"},
            "button": {"type": "string", "enum": ["left", "right", "wheel", "back", "forward"]},
            "keys": {"type": "array", "items": {"type": "string"}},
            "text": {"type": "string"},
            "scroll_x": {"type": "integer"}, "scroll_y": {"type": "integer"},
            "path": {"type": "array", "items": point}}}
        one = {**action, "required": ["type"]}
        parameters = one if not self.batched else {**action, "properties": {**action["properties"], "actions": {
            "type": "array", "items": one, "description": "Several actions in order, instead of one."}}}
        description = _DESCRIPTION.format(environment=_environment_words(screen.environment),
                                          width=screen.width, height=screen.height,
                                          batch=" (or a list of them in `actions`)" if self.batched else "")
        return {"type": "function", "name": self.name, "description": description, "parameters": parameters}

    # -- calls ------------------------------------------------------------------------------------
    def client_item(self, call_id: str, arguments: str) -> dict[str, Any]:
        """The call for the client's computer, with the actions that fit OpenAI's types (a call the client
        cannot parse would fail its whole response: the agents SDK reads the SDK's types)."""
        args = parse_arguments(arguments)
        try:
            actions = _actions(args)
        except ToolArgumentsError:
            actions = _fitting(_given(args))
        return self._call(call_id, actions, [], "completed")

    def _call(self, call_id: str, actions: list[Any], checks: list[dict[str, Any]], status: str) -> dict[str, Any]:
        shape: dict[str, Any] = {"actions": actions} if self.batched else {"action": actions[0] if actions else None}
        return {"id": new_id("cu"), "type": self.call_type, "call_id": call_id, **shape,
                "pending_safety_checks": checks, "status": status}

    async def call_item(self, call_id: str, arguments: dict[str, Any], workspace: Workspace) -> dict[str, Any]:
        actions = _actions(arguments)
        if not self.batched and len(actions) > 1:
            raise ToolArgumentsError("This computer takes one action per call.")
        await workspace.container_id()
        return self._call(call_id, actions, _checks(arguments), "in_progress")

    def held(self, call: dict[str, Any]) -> bool:
        return bool(call.get("pending_safety_checks"))

    async def refused(self, call_id: str, arguments: str, message: str,
                      workspace: Workspace) -> tuple[dict[str, Any], dict[str, Any]]:
        call = self.client_item(call_id, arguments)
        return call, _output(call_id, b"", "failed", [])

    async def run(self, call: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        output = await self._perform(call, run, [])
        await run.events.item(output)
        return output

    async def resume(self, call: dict[str, Any], answer: dict[str, Any], run: ToolRun) -> dict[str, Any]:
        output = await self._perform(call, run, list(answer.get("acknowledged_safety_checks") or []))
        await run.events.item(output)
        return output

    @staticmethod
    async def _perform(call: dict[str, Any], run: ToolRun, acknowledged: list[dict[str, Any]]) -> dict[str, Any]:
        """The call's actions on the display; actions the display refuses (a key it does not know)
        leave a failed output with the screen as it is."""
        screen = run.screen or Screen()
        actions = call_actions(call)
        try:
            png, status = await run.workspace.act(screen, actions), "completed"
        except InvalidRequest:
            png, status = await run.workspace.screenshot(screen), "failed"
        return _output(call["call_id"], png, status, acknowledged)

    # -- reading items back ------------------------------------------------------------------------
    def function_arguments(self, call: dict[str, Any]) -> dict[str, Any]:
        actions = call_actions(call)
        return dict(actions[0]) if len(actions) == 1 else {"actions": actions}

    def native_arguments(self, item: dict[str, Any]) -> dict[str, Any]:
        checks = item.get("pending_safety_checks") or []
        return {**self.function_arguments(item), **({"pending_safety_checks": checks} if checks else {})}

    def output_text(self, output: dict[str, Any]) -> str:
        if output.get("status") == "failed":
            return ("Failed: nothing was done. Each action is an object whose `type` is one of "
                    f"{', '.join(ACTION_TYPES)}, with that action's fields (x and y as integers, button, keys as "
                    "key names, text, scroll_x and scroll_y, path as [{x, y}, ...]).")
        return "Done. The screenshot of the screen after the action follows."

    def model_context(self, item: dict[str, Any], image: bool = True) -> list[dict[str, Any]]:
        """A screenshot reads back as the function's text result plus a user message with the image
        (``image``: False for older screenshots, ``stale_screenshots``)."""
        context = super().model_context(item)
        url = (item.get("output") or {}).get("image_url") if item.get("type") == self.output_type else None
        if url and image:
            context.append({"type": "message", "role": "user", "id": new_id("msg"), "content": [
                {"type": "input_text", "text": f"Screenshot after computer call {item['call_id']}:"},
                {"type": "input_image", "image_url": url, "detail": "auto"}]})
        return context


class ComputerUsePreviewTool(ComputerTool):
    """``computer_use_preview``: one ``action`` per call, at the display size the tool gives."""

    types: ClassVar[tuple[str, ...]] = ("computer_use_preview",)
    config: ClassVar[type[ToolConfig]] = ComputerUsePreviewConfig
    sdk_type: ClassVar[type | None] = ComputerUsePreviewToolParam
    owns_items: ClassVar[bool] = True
    batched: ClassVar[bool] = False

    def screen(self, config: ToolConfig) -> Screen:
        assert isinstance(config, ComputerUsePreviewConfig)
        return Screen(config.display_width, config.display_height, config.environment)

    def native_tool(self, config: ToolConfig) -> dict[str, Any]:
        return config.model_dump(include={"type", "display_width", "display_height", "environment"})


def call_actions(call: dict[str, Any]) -> list[dict[str, Any]]:
    """A ``computer_call``'s actions in order (``actions``, else its one ``action``)."""
    if call.get("actions"):
        return list(call["actions"])
    return [call["action"]] if call.get("action") else []


def _given(arguments: dict[str, Any]) -> list[Any]:
    batch = arguments.get("actions")
    return list(batch) if isinstance(batch, list) else [{k: v for k, v in arguments.items()
                                                        if k != "pending_safety_checks"}]


def _actions(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """The actions the model asked for, each checked against OpenAI's action types."""
    given = _given(arguments)
    if not given:
        raise ToolArgumentsError("`actions` must hold at least one action.")
    if len(given) > MAX_ACTIONS:
        raise ToolArgumentsError(f"At most {MAX_ACTIONS} actions per call.")
    actions = []
    for index, action in enumerate(given):
        try:
            actions.append(check_action(action))
        except ActionError as exc:
            raise ToolArgumentsError(f"Action {index}: '{exc.where}': {exc.reason} (types: "
                                     f"{', '.join(ACTION_TYPES)}).") from None
    return actions


class ActionError(ValueError):
    """An action that does not fit OpenAI's types: ``where`` names the field, ``reason`` says why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def check_action(action: Any) -> dict[str, Any]:
    """One action checked against OpenAI's action types, as the SDK dumps it (the model's calls here,
    ``POST /v1/containers/{id}/computer`` in the service); ``ActionError`` if it does not fit."""
    model = _ACTION_MODELS.get(str(action.get("type"))) if isinstance(action, dict) else None
    if model is None:  # checked first: the union's own error would name a field of its first member
        raise ActionError("type", f"expected an object whose type is one of {', '.join(ACTION_TYPES)}")
    try:
        checked = model.model_validate(action)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
        raise ActionError(where.lstrip(".") or "type", first["msg"]) from None
    result: dict[str, Any] = checked.model_dump(exclude_none=True)
    return result


def _fitting(given: list[Any]) -> list[dict[str, Any]]:
    """The actions among ``given`` that fit OpenAI's types (a refused call's item shows those)."""
    fitting = []
    for action in given:
        try:
            fitting.append(check_action(action))
        except ActionError:
            continue
    return fitting


def _checks(arguments: dict[str, Any]) -> list[dict[str, Any]]:
    checks = arguments.get("pending_safety_checks")
    return [dict(check) for check in checks if isinstance(check, dict)] if isinstance(checks, list) else []


def _output(call_id: str, png: bytes, status: str, acknowledged: list[dict[str, Any]]) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(png).decode() if png else ""
    return {"id": new_id("cuo"), "type": "computer_call_output", "call_id": call_id,
            "output": {"type": "computer_screenshot", "image_url": url},
            "acknowledged_safety_checks": acknowledged, "status": status}


def _environment_words(environment: str) -> str:
    return "a web browser, Chromium, full screen" if environment == "browser" else "a Linux desktop"


# -- safety checks the client acknowledges ------------------------------------------------------------

def released(context: list[dict[str, Any]], new_items: Iterable[dict[str, Any]]
             ) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The held calls (``computer_call`` with pending safety checks, in ``context``) that the request's
    own input answers, as (call, answer) pairs; an answer that does not acknowledge exactly the call's
    pending checks is refused (``InvalidRequest`` naming ``input[i]``)."""
    new_items = list(new_items)
    if not any(item.get("type") == "computer_call_output" for item in new_items):
        return []  # the common case, without a look at a history that may be long
    calls = {item.get("call_id"): item for item in context if item.get("type") == "computer_call"}
    # A call with more than its one answer in the context was performed already (Cove's output follows
    # the answer), whether the chain holds them or a stateless client sends them again: never twice.
    answers = Counter(item.get("call_id") for item in context if item.get("type") == "computer_call_output")
    pairs = []
    for index, item in enumerate(new_items):
        call = calls.get(item.get("call_id")) if item.get("type") == "computer_call_output" else None
        if call is None:
            continue
        pending = {check.get("id") for check in call.get("pending_safety_checks") or []}
        acknowledged = {check.get("id") for check in item.get("acknowledged_safety_checks") or []
                        if isinstance(check, dict)}
        if acknowledged != pending:
            where = f"input[{index}].acknowledged_safety_checks"
            wanted = ", ".join(sorted(map(str, pending))) or "none"
            raise InvalidRequest(f"Invalid value for '{where}': the computer call {call['call_id']!r} has the "
                                 f"pending safety checks {wanted}; acknowledge exactly those.", param=where,
                                 code="invalid_value")
        if pending and answers[call["call_id"]] <= 1:
            pairs.append((call, item))
    return pairs


SCREENSHOTS_SHOWN = 3
"""Screenshots a chat model sees as images: the newest ones. Older ones read as their text result alone,
since each image costs a vision model on the order of a thousand tokens and the screen they showed is
gone (OpenAI's own computer-use guidance keeps only recent screenshots too)."""


def stale_screenshots(items: list[dict[str, Any]], left_out: set[int]) -> set[int]:
    """``id()`` of the ``computer_call_output`` items whose screenshots a chat model no longer sees
    (among ``items`` less those whose ``id()`` is in ``left_out``)."""
    shots = [item for item in items if item.get("type") == "computer_call_output" and id(item) not in left_out
             and (item.get("output") or {}).get("image_url")]
    return {id(item) for item in shots[:-SCREENSHOTS_SHOWN]}


def superseded(items: list[dict[str, Any]]) -> set[int]:
    """``id()`` of each ``computer_call_output`` that a later one for the same call replaces: a held
    call's acknowledgement, which Cove's own output (with the screenshot) follows."""
    last: dict[Any, int] = {}
    for item in items:
        if item.get("type") == "computer_call_output":
            last[item.get("call_id")] = id(item)
    return {id(item) for item in items
            if item.get("type") == "computer_call_output" and last[item.get("call_id")] != id(item)}
