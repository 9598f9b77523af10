"""Structured-output clients end to end: instructor and pydantic-ai on the real model.

Both turn a pydantic model with ``Field(ge, le, max_length)`` and ``EmailStr`` into a JSON
Schema and send it either as ``response_format`` or as a forced tool call: the grammar
(llguidance behind ``engine/llama``) must make every reply validate, so each client gets
its model back on the first try (no retries allowed: a retry would hide a bad reply).
"""

from __future__ import annotations

import instructor
import openai
import pytest
from pydantic import BaseModel, EmailStr, Field

from tests.support.openai_fixtures import KEY
from tests.support.server import ServerProcess

SEEDS = (0, 1)


class Person(BaseModel):
    name: str = Field(min_length=1, max_length=20)
    age: int = Field(ge=18, le=99)
    email: EmailStr
    score: float = Field(ge=0, le=1)


def _check(person: object) -> None:
    assert isinstance(person, Person)
    assert 18 <= person.age <= 99
    assert 0 <= person.score <= 1


@pytest.mark.parametrize("mode", [instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS])
def test_instructor_gets_a_valid_model_first_time(
    client: openai.OpenAI, mode: instructor.Mode
) -> None:
    structured = instructor.from_openai(client, mode=mode)
    for seed in SEEDS:
        person = structured.chat.completions.create(
            model="any",
            response_model=Person,
            messages=[{"role": "user", "content": "Invent a person."}],
            max_retries=0,
            temperature=1.0,
            seed=seed,
            max_tokens=250,
        )
        _check(person)


@pytest.mark.parametrize("native", [True, False], ids=["response_format", "tool"])
def test_pydantic_ai_agent_gets_a_valid_model(server: ServerProcess, native: bool) -> None:
    from pydantic_ai import Agent, NativeOutput
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider
    from pydantic_ai.settings import ModelSettings

    provider = OpenAIProvider(base_url=f"{server.base_url}/v1", api_key=KEY)
    model = OpenAIChatModel("any", provider=provider)
    output = NativeOutput(Person) if native else Person
    agent = Agent(model, output_type=output, retries=0)
    for seed in SEEDS:
        settings = ModelSettings(temperature=1.0, seed=seed, max_tokens=250)
        result = agent.run_sync("Invent a person.", model_settings=settings)
        _check(result.output)
