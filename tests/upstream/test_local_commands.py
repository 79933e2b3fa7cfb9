"""Commands the embedded model may run, drawn from the user's words (``local_commands``)."""

from __future__ import annotations

import json
from typing import Any

import llama_cpp

from cove.upstream.base import ModelRequest
from cove.upstream.local_commands import hold_commands, suggested_commands
from cove.upstream.local_grammar import answer_grammar
from cove.upstream.local_prompt import result_quote

SHELL = {"type": "function", "name": "shell", "parameters": {
    "type": "object", "properties": {"commands": {"type": "array", "items": {"type": "string"}},
                                     "timeout_ms": {"type": "integer"}}, "required": ["commands"]}}
WEATHER = {"type": "function", "name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}


def test_commands_come_from_fences_backticks_or_command_words() -> None:
    assert suggested_commands("Make a venv and install nothing; show python3 -V") == ["python3 -V"]
    assert suggested_commands("Run `ls -la /tmp` and then `ls -la /tmp`.") == ["ls -la /tmp"]
    assert suggested_commands("Try this:\n```bash\n$ uname -a\necho hi\n```\nand `date`") == [
        "uname -a", "echo hi", "date"]
    assert suggested_commands("Count lines with wc -l /etc/passwd, then cat /etc/hostname.") == [
        "wc -l /etc/passwd", "cat /etc/hostname"]
    # Words that are also English verbs are not commands; prose without commands gives none.
    assert suggested_commands("Make a list, find the bug and sort it out.") == []
    assert suggested_commands("Name a prime number.") == []


def user(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "user", "content": text}


def call(*commands: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": "c", "name": "shell", "arguments": json.dumps({"commands": commands})}


def commands_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    (shell,) = [tool for tool in tools if tool["name"] == "shell"]
    return dict(shell["parameters"]["properties"]["commands"])


def test_the_users_commands_hold_the_argument_until_each_ran() -> None:
    asked = [user("show python3 -V and uname -r")]
    held, due = hold_commands([SHELL, WEATHER], asked)
    schema = commands_schema(held)
    assert due  # the user asked for commands to run: the model calls before it answers
    assert schema["items"] == {"type": "string", "enum": ["python3 -V", "uname -r"]} and schema["minItems"] == 1
    output = {"type": "function_call_output", "call_id": "c", "output": "Python 3.11.2"}
    after_one, due = hold_commands([SHELL, WEATHER], [*asked, call("python3 -V"), output])
    assert commands_schema(after_one)["items"]["enum"] == ["uname -r"] and due
    after_both, due = hold_commands([SHELL, WEATHER], [*asked, call("python3 -V"), output, call("uname -r"), output])
    assert [tool["name"] for tool in after_both] == ["weather"] and not due  # nothing left to run: answer
    # A new user turn starts over; other tools and arguments are left as they are.
    again, _ = hold_commands([SHELL, WEATHER], [*asked, call("python3 -V"), output, user("again: uname -r")])
    assert commands_schema(again)["items"]["enum"] == ["uname -r"]
    assert again[1] == WEATHER and SHELL["parameters"]["properties"]["commands"] == {  # type: ignore[index]
        "type": "array", "items": {"type": "string"}}


def test_without_the_users_commands_the_model_writes_a_few_short_ones() -> None:
    held, due = hold_commands([SHELL], [user("Look around.")])
    schema = commands_schema(held)
    assert not due and hold_commands([WEATHER], [user("run `date`")]) == ([WEATHER], False)
    assert schema["items"] == {"type": "string", "minLength": 1, "maxLength": 200}
    assert (schema["minItems"], schema["maxItems"]) == (1, 3)


def test_one_command_is_held_as_a_string_and_an_argv_is_left_alone() -> None:
    one = {"type": "function", "name": "run", "parameters": {"type": "object", "properties": {
        "command": {"type": "string"}}}}
    held, due = hold_commands([one], [user("run `date`")])
    assert held[0]["parameters"]["properties"]["command"] == {"type": "string", "enum": ["date"]} and due
    argv = {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {
        "command": {"type": "array", "items": {"type": "string"}}}}}
    assert hold_commands([argv], [user("run `date`")]) == ([argv], False)


def _answering(output: str) -> ModelRequest:
    return ModelRequest(model="m", tools=[SHELL], input=[
        user("Run `python3 -V`"),
        {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": '{"commands": ["python3 -V"]}'},
        {"type": "function_call_output", "call_id": "c1", "output": output}])


def test_an_answer_from_results_quotes_what_the_newest_result_printed() -> None:
    assert result_quote(_answering("[exit code 0]\nstdout:\nPython 3.11.2\n")) == "It printed: Python 3.11.2"
    assert result_quote(_answering("[exit code 127]\nstderr:\nbash: nope: command not found\n")) == (
        "The command failed (exit code 127). It printed: bash: nope: command not found")
    assert result_quote(_answering("[timed out]\nstdout:\n")) == "The command timed out. It printed nothing."
    assert result_quote(_answering("plain text\nsecond line")) == "It printed: plain text"
    # Held by the grammar to exactly that quote (escaped as JSON), however the output is spelled.
    grammar = answer_grammar(result_quote(_answering('[exit code 0]\nstdout:\nsaid "hi" \\ bye\n')))
    assert grammar.startswith("root ::= ")
    answer = json.loads(json.loads(grammar.removeprefix("root ::= ")))  # the literal is escaped as JSON is
    assert answer == {"type": "message", "content": 'It printed: said "hi" \\ bye'}
    assert llama_cpp.LlamaGrammar.from_string(grammar, verbose=False) is not None  # and llama.cpp parses it
