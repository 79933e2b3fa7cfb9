"""``response.steer``: user input a WebSocket client queues into one of its running responses.

As OpenAI defines it (the SDK's ``response.steer`` docstring and its ``response.steer.*`` events):

- A valid steer of an active response is acknowledged with ``response.steer.accepted`` (the server
  now owns the input; it is not applied yet). Invalid input, an unknown or finished response, or too
  many queued steers answer ``response.steer.failed`` with the input given back.
- The running response does not take the input itself. At its next safe boundary (hosted tools done,
  before the next model turn; ``agent/loop.py``) it ends ``incomplete`` with reason ``steered``; if it
  completes first, that is its end. Either way a successor response starts on the same lane, with the
  same settings, continuing from it (``previous_response_id``) with the queued input as its input: the
  successor's ``response.created`` is the commit point.
- If the response stops for tool output the client owes, the input stays queued: one
  ``response.steer.pending`` per steer (after ``response.completed``) lists the outputs owed, and the
  client's next ``response.create`` continuing that response gets the queued input before its own.

Steer events are not part of any response's stream: their ``sequence_number`` counts the
connection's steer events.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cove.agent.request import CreateParams
from cove.ids import new_id
from cove.service.runs import Run

if TYPE_CHECKING:
    from cove.api.responses_socket import Connection

MAX_STEERS = 16
"""Steers queued into one response; more are ``too_many_pending_steers``."""
MAX_QUEUED = 64
"""Steers queued across a connection (running responses and ones waiting for tool output): each may
hold a message's worth of input, so a client cycling responses cannot pile them up without bound."""
_REMEMBERED = 256
"""Ended responses a connection remembers, to answer a late steer ``response_already_completed``."""
_PARTS = frozenset({"input_text", "input_image", "input_file"})
_OWED = {"function_call": "function_call_output", "custom_tool_call": "custom_tool_call_output",
         "computer_call": "computer_call_output", "shell_call": "shell_call_output",
         "apply_patch_call": "apply_patch_call_output"}
"""Calls the client runs, and the output item each owes (a hosted call has its output in the response)."""


@dataclass
class Steer:
    id: str
    target: str
    input: str | list[dict[str, Any]]


def items_of(steers: list[Steer]) -> list[dict[str, Any]]:
    """The steers' input as input items, in submission order."""
    items: list[dict[str, Any]] = []
    for steer in steers:
        if isinstance(steer.input, str):
            items.append({"type": "message", "role": "user", "content": steer.input})
        else:
            items.extend({"type": "message", **item} for item in steer.input)
    return items


def required_input(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stubs of the outputs the client owes for calls in ``output`` (``response.steer.pending``)."""
    answered = {item.get("call_id") for item in output if item.get("type", "").endswith("_output")}
    stubs = []
    for item in output:
        owed = _OWED.get(item.get("type", ""))
        if owed is not None and item.get("call_id") not in answered:
            stub = {"type": owed, "call_id": item.get("call_id")}
            if owed == "function_call_output":
                stub["name"] = item.get("name")
            stubs.append(stub)
        elif item.get("type") == "mcp_approval_request":
            stubs.append({"type": "mcp_approval_response", "approval_request_id": item.get("id")})
    return stubs


def _problem(message: dict[str, Any]) -> str | None:
    """Why a steer message is invalid, or None: only user messages of text, image and file parts."""
    unknown = sorted(set(message) - {"type", "previous_response_id", "input"})
    if unknown:
        return f"Unknown parameter: '{unknown[0]}'. A steer takes only previous_response_id and input."
    value = message.get("input")
    if isinstance(value, str):
        return None if value else "input must not be empty."
    if not isinstance(value, list) or not value:
        return "input must be a string or a non-empty array of user messages."
    for index, item in enumerate(value):
        if (not isinstance(item, dict) or item.get("role") != "user" or item.get("type", "message") != "message"
                or set(item) - {"type", "role", "content"}):
            return f"input[{index}] must be a user message with only type, role and content."
        content = item.get("content")
        if isinstance(content, str):
            continue
        if not isinstance(content, list) or not all(isinstance(p, dict) and p.get("type") in _PARTS
                                                    for p in content):
            return f"input[{index}].content must be a string or input_text, input_image and input_file parts."
    return None


class Steering:
    """The steers of one connection: queued into its running responses, or waiting on a parent."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.pending: dict[str, list[Steer]] = {}
        """Steers accepted into a response that then stopped for client tool output, by that response."""
        self._ended: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._numbers = itertools.count()

    def submit(self, message: dict[str, Any]) -> None:
        target = message.get("previous_response_id")
        given = message.get("input")
        if not isinstance(target, str) or not target:
            self._fail_unqueued("", given, "invalid_input", "previous_response_id must name the response to steer.")
            return
        active = self.connection.active.get(target)
        lane = active.lane if active is not None else None
        problem = _problem(message)
        if problem is not None:
            self._fail_unqueued(target, given, "invalid_input", problem, lane)
        elif active is None:
            ended = target in self._ended or target in self.pending
            self._fail_unqueued(target, given, "response_already_completed" if ended else "response_not_found",
                                f"Response '{target}' has finished and takes no more steering input." if ended else
                                f"Response '{target}' is not running on this connection.")
        elif active.params.conversation_id is not None or active.params.context_management:
            self._fail_unqueued(target, given, "steering_not_supported", "A response bound to a conversation "
                                "or compacting its context (context_management) cannot be steered.", lane)
        elif len(active.run.steering) >= MAX_STEERS or self._queued() >= MAX_QUEUED:
            self._fail_unqueued(target, given, "too_many_pending_steers",
                                f"Response '{target}' already has {MAX_STEERS} steers queued, or this connection "
                                f"{MAX_QUEUED}.", lane)
        else:
            steer = Steer(new_id("steer"), target, message["input"])
            active.run.steering.append(steer)
            self._send({"type": "response.steer.accepted", "steer": {"id": steer.id, "previous_response_id": target}},
                       lane)

    async def after(self, run: Run, params: CreateParams, lane: str | None) -> None:
        """What the steers queued into ``run`` become once it has ended."""
        self._ended[run.id] = None
        while len(self._ended) > _REMEMBERED:
            self._ended.popitem(last=False)
        steers = list(run.steering)
        run.steering.clear()
        if not steers:
            return
        response = run.response
        owed = required_input(response["output"]) if response["status"] == "completed" else []
        steered = (response.get("incomplete_details") or {}).get("reason") == "steered"
        if owed:
            self.keep_pending(run.id, steers)
            for steer in steers:
                self._send({"type": "response.steer.pending", "reason": "waiting_for_required_input",
                            "required_input": owed, "steer": {"id": steer.id, "previous_response_id": run.id}}, lane)
        elif response["status"] == "completed" or steered:
            successor = params.model_copy(update={"input": items_of(steers), "previous_response_id": run.id})
            await self.connection.respond(successor, lane, steers)
        else:
            self.failed(steers, "response_not_active",
                        f"Response '{run.id}' ended {response['status']}; its steering input was not applied.", lane)

    def _queued(self) -> int:
        running = sum(len(active.run.steering) for active in self.connection.active.values())
        return running + sum(len(steers) for steers in self.pending.values())

    def take_pending(self, parent: str) -> list[Steer]:
        return self.pending.pop(parent, [])

    def keep_pending(self, parent: str, steers: list[Steer]) -> None:
        self.pending.setdefault(parent, [])[:0] = steers

    def failed(self, steers: list[Steer], code: str, message: str, lane: str | None) -> None:
        for steer in steers:
            self._send({"type": "response.steer.failed", "error": _error(code, message),
                        "steer": {"id": steer.id, "previous_response_id": steer.target, "input": steer.input}}, lane)

    def _fail_unqueued(self, target: str, given: Any, code: str, message: str, lane: str | None = None) -> None:
        """A steer refused before it got an id: the failure omits ``steer.id``."""
        self._send({"type": "response.steer.failed", "error": _error(code, message),
                    "steer": {"previous_response_id": target, "input": given}}, lane)

    def _send(self, event: dict[str, Any], lane: str | None) -> None:
        self.connection.send({**event, "sequence_number": next(self._numbers)}, lane)


def _error(code: str, message: str) -> dict[str, str]:
    return {"code": code, "message": message, "type": "invalid_request_error"}
