"""What the embedded model is shown: Responses input as chat-template messages, and its tools.

A model this small is told one JSON answer format for turns with tools (see ``local_grammar``) and
sees past calls in that format, so history and grammar agree.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

from cove.upstream.base import ModelRequest
from cove.upstream.local_commands import hold_commands, user_turn


def _part_text(part: Any) -> str:
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        return ""
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text", "summary_text", "reasoning_text"):
        return str(part.get("text") or "")
    if kind == "refusal":
        return str(part.get("refusal") or "")
    if kind == "input_image":
        return "[image]"
    if kind == "input_file":
        return f"[file: {part.get('filename') or part.get('file_id') or 'attachment'}]"
    return ""


def _content_text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(_part_text(part) for part in content)
    return _part_text(content) if content is not None else ""


def _call_text(name: str, arguments: Any, envelope: bool) -> str:
    """A past call as the assistant's turn: in the JSON the model is asked to write when tools are
    on (so history shows it the format), else as prose (so it does not copy JSON into its answer)."""
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):
            arguments = json.loads(arguments)
    if envelope:
        return json.dumps({"type": "function_call", "name": name, "arguments": arguments}, ensure_ascii=False)
    return f"I called {name} with {json.dumps(arguments, ensure_ascii=False)}."


def chat_messages(request: ModelRequest, tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Responses input items as chat-template messages (role + text)."""
    return [*system_messages(request, tools),
            *(message for message in item_messages(request, tools) if message is not None)]


def system_messages(request: ModelRequest, tools: list[dict[str, Any]]) -> list[dict[str, str]]:
    """What the prompt opens with whatever the input: the instructions and the tool prompt."""
    system = [request.instructions] if request.instructions else []
    if tools:
        system.append(_tool_prompt(tools))
    elif answers_from_results(request):
        system.append(_ANSWER_PROMPT)
    return [{"role": "system", "content": "\n\n".join(system)}] if system else []


def item_messages(request: ModelRequest, tools: list[dict[str, Any]]) -> list[dict[str, str] | None]:
    """The message each input item becomes, in order; None for an item the model is not shown."""
    messages: list[dict[str, str] | None] = []
    names: dict[str, str] = {}
    envelope = bool(tools) or answers_from_results(request)
    for item in request.input:
        kind = item.get("type", "message")
        message = None
        if kind == "message":
            role = item.get("role", "user")
            role = "system" if role == "developer" else role
            message = {"role": role, "content": _content_text(item.get("content"))}
        elif kind in ("function_call", "custom_tool_call"):
            name = str(item.get("name") or "")
            names[str(item.get("call_id"))] = name
            args = item.get("arguments") if kind == "function_call" else {"input": item.get("input")}
            message = {"role": "assistant", "content": _call_text(name, args, envelope)}
        elif kind in ("function_call_output", "custom_tool_call_output"):
            name = names.get(str(item.get("call_id")), "the function")
            output = item.get("output")
            text = output if isinstance(output, str) else _content_text(output)
            message = {"role": "user", "content": f"Result of {name}:\n{text}"}
        messages.append(message)
    return messages


_ANSWER_PROMPT = ('Answer with JSON {"type": "message", "content": "..."}: one short sentence that tells the '
                  "user what the function result says.")


def answers_from_results(request: ModelRequest) -> bool:
    """Whether this turn has tools but may call none of them after results came back (its hosted-call
    rounds are used up, or every command the user named has run): the model answers from the results,
    in the JSON message it wrote with tools on (``local_grammar.answer_grammar``), kept short."""
    if not any(t.get("type", "function") == "function" and t.get("name") for t in request.tools):
        return False
    if function_tools(request)[0]:
        return False
    return any(item.get("type") in ("function_call_output", "custom_tool_call_output")
               for item in user_turn(request.input)[1])


_STATUS = re.compile(r"\[(exit code (-?\d+)|timed out)\]")


def result_quote(request: ModelRequest) -> str:
    """The answer to a turn that answers from tool results: what the newest result printed, in a sentence.

    Its first line that says something (status lines such as ``[exit code 0]`` and labels such as
    ``stdout:`` are the tool's framing, not its output); a failure or timeout the framing reports is
    said first."""
    outputs = [item for item in user_turn(request.input)[1]
               if item.get("type") in ("function_call_output", "custom_tool_call_output")]
    output = outputs[-1].get("output") if outputs else ""
    text = output if isinstance(output, str) else _content_text(output)
    failure = ""
    for line in text.splitlines():
        status = _STATUS.fullmatch(line.strip())
        if status and status.group(1) == "timed out":
            failure = "The command timed out. "
        elif status and status.group(2) not in (None, "0"):
            failure = f"The command failed (exit code {status.group(2)}). "
    said = next((line.strip() for line in text.splitlines()
                 if line.strip() and not _STATUS.fullmatch(line.strip()) and not line.strip().endswith(":")), "")
    return f"{failure}It printed: {said}" if said else f"{failure}It printed nothing."


def _tool_prompt(tools: list[dict[str, Any]]) -> str:
    lines = ["You can call functions. To call one, answer with JSON "
             '{"type": "function_call", "name": ..., "arguments": {...}}; '
             'otherwise answer with {"type": "message", "content": "..."}. After a result, answer the user '
             "from it in a sentence or two. Functions:"]
    for tool in tools:
        spec = {"name": tool["name"], "description": tool.get("description") or "",
                "parameters": tool.get("parameters") or {}}
        lines.append(json.dumps(spec, ensure_ascii=False))
    return "\n".join(lines)


def function_tools(request: ModelRequest) -> tuple[list[dict[str, Any]], bool]:
    """The function tools the model may call now, and whether it must call one; command arguments
    held to the user's commands, which must run before it answers (``local_commands``)."""
    tools, required = _offered(request)
    held, due = hold_commands(tools, request.input)
    return held, required or due


def _offered(request: ModelRequest) -> tuple[list[dict[str, Any]], bool]:
    choice = request.tool_choice
    tools = [t for t in request.tools if t.get("type", "function") == "function" and t.get("name")]
    if not tools or choice == "none":
        return [], False
    if isinstance(choice, dict):
        kind = choice.get("type")
        if kind == "function" and choice.get("name"):
            return [t for t in tools if t["name"] == choice["name"]], True
        if kind == "allowed_tools":
            allowed = {t.get("name") for t in choice.get("tools", []) if isinstance(t, dict)}
            tools = [t for t in tools if t["name"] in allowed]
            return tools, bool(tools) and choice.get("mode") == "required"
        return tools, False
    return tools, choice == "required"
