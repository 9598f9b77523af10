"""Qwen3-Coder: ``<tool_call><function=name><parameter=p>value</parameter></function></tool_call>``.

Parameter values are plain text: a parameter whose schema type is ``string`` keeps its text
as is; any other is read as JSON when it is JSON (else kept as text). The grammar writes
string parameters as text without ``<`` and the others as JSON valid for their schema.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from app.engine.types import Grammar, JsonRule
from app.serving.tool_formats.base import (
    ParsedCall,
    ToolFormat,
    ToolSpec,
    arguments_schema,
    gbnf_literal,
)

_FUNCTION = re.compile(r"<function=([^>\n]+)>")
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>", re.DOTALL)


@dataclass
class Qwen3CoderFormat(ToolFormat):
    """XML-ish calls; ``string_params`` says which parameters are text (by tool)."""

    name: ClassVar[str] = "qwen3-coder"
    markers: ClassVar[tuple[str, ...]] = ("<function=", "<parameter=")
    open: ClassVar[str] = "<tool_call>"
    close: ClassVar[str] = "</tool_call>"
    string_params: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def bind(self, spec: ToolSpec) -> Qwen3CoderFormat:
        """This format knowing which parameters of ``spec``'s tools are strings."""
        return Qwen3CoderFormat(
            {t.function.name: _strings(t.function.parameters) for t in spec.tools}
        )

    def _arguments(self, name: str, body: str, *, complete: bool) -> str:
        strings = self.string_params.get(name, frozenset())
        pairs = []
        for key, raw in _PARAMETER.findall(body):
            value: Any = raw
            if key not in strings:
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError:
                    value = raw
            pairs.append(f"{json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
        text = "{" + ", ".join(pairs)
        return text + "}" if complete else text

    def parse_block(self, block: str, names: frozenset[str]) -> list[ParsedCall] | None:
        """The call in a block."""
        found = _FUNCTION.search(block)
        if found is None or found.group(1) not in names or "</function>" not in block:
            return None
        body = block[found.end() : block.rindex("</function>")]
        if _PARAMETER.sub("", body).strip():
            return None  # text that is no parameter: not a call
        return [ParsedCall(found.group(1), self._arguments(found.group(1), body, complete=True))]

    def partial(self, block: str) -> tuple[str, str] | None:
        """Name, then the arguments of the parameters closed so far."""
        found = _FUNCTION.search(block)
        if found is None:
            return None
        complete = "</function>" in block
        body = block[found.end() : block.rindex("</function>") if complete else len(block)]
        return found.group(1), self._arguments(found.group(1), body, complete=complete)

    def grammar(self, spec: ToolSpec) -> Grammar | None:
        """Each tool's parameters in schema order (required ones must be there)."""
        rules: list[JsonRule] = []
        lines = ["tc-text ::= [^<]*"]
        for i, tool in enumerate(spec.tools):
            schema = tool.function.parameters or {}
            params, required = schema.get("properties", {}), set(schema.get("required", []))
            parts = []
            for j, (key, prop) in enumerate(params.items()):
                if isinstance(prop, dict) and prop.get("type") == "string":
                    value = "tc-text"
                else:
                    value = f"tool-args-{i}-{j}"
                    rules.append(JsonRule(value, arguments_schema(tool.function, prop)))
                opening = gbnf_literal(f"<parameter={key}>\n")
                part = f'({opening} {value} "\\n</parameter>\\n")'
                parts.append(part if key in required else f"{part}?")
            head = gbnf_literal(f"\n<function={tool.function.name}>\n")
            lines.append(f'tc-{i} ::= {head} {" ".join(parts)} "</function>\\n</tool_call>"')
        more = ' ("\\n" tc-call)*' if spec.parallel else ""
        lines[:0] = [
            f"root ::= {'tc-call' if spec.forced else 'tc-rest'}{more}",
            f'tc-call ::= "{self.open}" tc-rest',
            "tc-rest ::= " + " | ".join(f"tc-{i}" for i in range(len(spec.tools))),
        ]
        trigger = "" if spec.forced else self.open
        return Grammar("\n".join(lines), tuple(rules), trigger, "tools")


def _strings(schema: dict[str, Any] | None) -> frozenset[str]:
    properties = (schema or {}).get("properties", {})
    return frozenset(
        key
        for key, prop in properties.items()
        if isinstance(prop, dict) and prop.get("type") == "string"
    )
