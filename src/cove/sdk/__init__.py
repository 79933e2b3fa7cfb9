"""Cove's sandbox SDK: ``Sandbox`` and ``AsyncSandbox`` over Cove's HTTP API, in E2B's shape.

It talks to a server by ``COVE_BASE_URL`` (with or without ``/v1``) and ``COVE_API_KEY`` and imports
nothing of the server (an import-linter contract says so): only httpx, and websockets for ``pty``.
"""

from cove.sdk.async_sandbox import AsyncSandbox
from cove.sdk.commands import AsyncCommandHandle
from cove.sdk.errors import (
                             APIError,
                             AuthenticationError,
                             CommandExitError,
                             ConflictError,
                             InvalidRequestError,
                             NotFoundError,
                             PermissionDeniedError,
                             RateLimitError,
                             SandboxError,
                             ServerError,
)
from cove.sdk.models import (
                             CommandResult,
                             EntryInfo,
                             Execution,
                             ExecutionError,
                             FilesystemEvent,
                             FilesystemEventType,
                             FileType,
                             Logs,
                             PtySize,
                             Result,
                             SandboxInfo,
                             SnapshotInfo,
                             WriteInfo,
)
from cove.sdk.sandbox import CommandHandle, Sandbox

__all__ = ["APIError", "AsyncCommandHandle", "AsyncSandbox", "AuthenticationError", "CommandExitError",
           "CommandHandle", "CommandResult", "ConflictError", "EntryInfo", "Execution", "ExecutionError",
           "FileType", "FilesystemEvent", "FilesystemEventType", "InvalidRequestError", "Logs", "NotFoundError",
           "PermissionDeniedError", "PtySize", "RateLimitError", "Result", "Sandbox", "SandboxError",
           "SandboxInfo", "ServerError", "SnapshotInfo", "WriteInfo"]
