"""A request body shaped like Claude Code's ``/v1/messages`` calls (2.x, with
``CLAUDE_CODE_ATTRIBUTION_HEADER=0``): system text blocks with ``cache_control``, its tool
set's kind of JSON Schemas (``$schema``, ``additionalProperties: false``, enums, arrays of
objects, ``format: uri``), ``<system-reminder>`` user blocks, ``metadata.user_id``, a
``thinking`` field and a large ``max_tokens``. Shortened descriptions: the shape is the point.
"""

from __future__ import annotations

from typing import Any

DRAFT7 = "http://json-schema.org/draft-07/schema#"
EPHEMERAL = {"type": "ephemeral"}


def _tool(
    name: str, description: str, properties: dict[str, Any], required: list[str]
) -> dict[str, Any]:
    return {
        "name": name,
        "description": description,
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
            "$schema": DRAFT7,
        },
    }


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


TODO_ITEM = {
    "type": "object",
    "properties": {
        "content": {"type": "string", "minLength": 1},
        "status": {"type": "string", "enum": ["pending", "in_progress", "completed"]},
        "activeForm": {"type": "string", "minLength": 1},
    },
    "required": ["content", "status", "activeForm"],
    "additionalProperties": False,
}

TOOLS: list[dict[str, Any]] = [
    _tool("Task", "Launch a sub-agent.", {
        "description": _string("A short description of the task"),
        "prompt": _string("The task for the agent"),
        "subagent_type": _string("The type of agent"),
    }, ["description", "prompt", "subagent_type"]),
    _tool("Bash", "Run a shell command.", {
        "command": _string("The command to execute"),
        "timeout": {"type": "number", "description": "Timeout in milliseconds"},
        "description": _string("What the command does"),
        "run_in_background": {"type": "boolean"},
    }, ["command"]),
    _tool("Glob", "Find files by pattern.", {
        "pattern": _string("The glob pattern"), "path": _string("The directory to search"),
    }, ["pattern"]),
    _tool("Grep", "Search file contents.", {
        "pattern": _string("The regular expression"),
        "path": _string("File or directory"),
        "output_mode": {"type": "string", "enum": ["content", "files_with_matches", "count"]},
        "-n": {"type": "boolean"},
        "head_limit": {"type": "number"},
    }, ["pattern"]),
    _tool("Read", "Read a file.", {
        "file_path": _string("The absolute path"),
        "offset": {"type": "number"}, "limit": {"type": "number"},
    }, ["file_path"]),
    _tool("Edit", "Replace text in a file.", {
        "file_path": _string("The absolute path"),
        "old_string": _string("The text to replace"),
        "new_string": _string("The replacement"),
        "replace_all": {"type": "boolean", "default": False},
    }, ["file_path", "old_string", "new_string"]),
    _tool("Write", "Write a file.", {
        "file_path": _string("The absolute path"), "content": _string("The content"),
    }, ["file_path", "content"]),
    _tool("WebFetch", "Fetch a URL.", {
        "url": {"type": "string", "format": "uri"}, "prompt": _string("What to extract"),
    }, ["url", "prompt"]),
    _tool("TodoWrite", "Update the todo list.", {
        "todos": {"type": "array", "items": TODO_ITEM},
    }, ["todos"]),
    _tool("WebSearch", "Search the web.", {
        "query": {"type": "string", "minLength": 2},
        "allowed_domains": {"type": "array", "items": {"type": "string"}},
    }, ["query"]),
    _tool("BashOutput", "Read a background shell's output.", {
        "bash_id": _string("The shell id"),
    }, ["bash_id"]),
    _tool("KillShell", "Kill a background shell.", {
        "shell_id": _string("The shell id"),
    }, ["shell_id"]),
]  # fmt: skip


def claude_code_body(model: str, *, max_tokens: int = 32000, stream: bool = True) -> dict[str, Any]:
    """One first turn as Claude Code sends it."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "stream": stream,
        "temperature": 1,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
             "cache_control": EPHEMERAL},
            {"type": "text", "text": "You are an interactive CLI tool that helps users with "
             "software engineering tasks. Be concise.", "cache_control": EPHEMERAL},
        ],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>\nThe todo list is empty.\n"
                     "</system-reminder>"},
                    {"type": "text", "text": "Say hello.", "cache_control": EPHEMERAL},
                ],
            }
        ],
        "tools": TOOLS,
        "metadata": {"user_id": "user_0123_account__session_4567"},
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }  # fmt: skip
