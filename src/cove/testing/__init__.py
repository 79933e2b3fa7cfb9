"""Fakes for testing the layers above the sandbox and the upstreams in milliseconds, without root:
a scripted model (``ScriptedModel``) and an in-memory container (``MemorySandbox``, reached by
hosted tools through ``MemoryWorkspace``). Production code never imports this package.

A tool's loop behaviour, tested end to end in-process::

    model = ScriptedModel([Reply(calls=[Call("shell", {"commands": ["ls"]})]), Reply(text="done")])
    sandbox = MemorySandbox(run=lambda command: CommandOutput(stdout="a.txt\\n", stderr="",
                                                             outcome=ExitOutcome(exit_code=0)))
    events = await run_turns(model, CreateParams(model="m", input="go", tools=[{"type": "shell"}]),
                             MemoryWorkspace(sandbox))

The acceptance tests of a capability still run the real server, containers and HTTP upstream.
"""

from cove.testing.agent import run_turns
from cove.testing.model import Call, Reply, ScriptedModel
from cove.testing.sandbox import MemoryDisplay, MemoryFiles, MemorySandbox, MemoryWorkspace

__all__ = ["Call", "MemoryDisplay", "MemoryFiles", "MemorySandbox", "MemoryWorkspace", "Reply", "ScriptedModel",
           "run_turns"]
