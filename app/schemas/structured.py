"""Wire types of structured output: ``response_format`` (OpenAI) and a raw ``grammar``."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JsonSchemaFormat(BaseModel):
    """``response_format.json_schema``: a named JSON Schema the reply must follow."""

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-zA-Z0-9_-]+$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """``response_format``: plain text, any JSON object, or JSON following a schema.

    ``{"type": "json_object", "schema": {...}}`` (llama.cpp's server extension) is taken as
    a ``json_schema`` format.
    """

    model_config = ConfigDict(strict=True, extra="ignore", populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("response_format of type json_schema needs a json_schema object")
        return self

    def schema_dict(self) -> dict[str, Any] | None:
        """The schema to follow: None for text; ``{"type": "object"}`` for plain JSON mode."""
        if self.type == "text":
            return None
        if self.json_schema is not None:
            return self.json_schema.schema_
        return self.schema_ if self.schema_ is not None else {"type": "object"}
