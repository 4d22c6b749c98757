"""An example third-party oracle: a chat backend that ranks the answers it is shown longest first.

It only completes chats.  The framework renders the ranking prompt, asks again
when a reply is unusable, caches every answer and enforces ``oracle.budget_usd``;
none of that is written here.  ``oracle.model: echo/sloppy`` makes its first reply
to each request prose instead of JSON, to watch the framework ask again.  Its one
option, ``oracle.options.price_per_token``, shows how a plugin declares its own
settings: the framework checks them and hands the factory an ``EchoOptions``.
"""

from __future__ import annotations

import json
import re

import pluggy
from pydantic import BaseModel, Field

from cyclealign.oracle import ChatBackend, ChatReply, ChatRequest, Usage

hookimpl = pluggy.HookimplMarker("cyclealign")
ANSWER = re.compile(r"<<<Response-(\d+)>>>\n(.*?)\n<<<END Response-\1>>>", re.S)


class EchoOptions(BaseModel, extra="forbid"):
    price_per_token: float = Field(1e-6, ge=0, description="pretend dollars per token (budgets count them)")


class EchoChat(ChatBackend):
    def __init__(self, config, options: EchoOptions | None = None) -> None:
        self.model, self.options = config.model or "echo", options or EchoOptions()

    def price(self, prompt_tokens: int, completion_tokens: int) -> float:
        return self.options.price_per_token * (prompt_tokens + completion_tokens)

    def complete(self, request: ChatRequest) -> ChatReply:
        task = request.messages[1]["content"].rsplit("## Your task", 1)[-1]  # past the demonstrations
        answers = [text for _, text in ANSWER.findall(task)]
        order = sorted(range(len(answers)), key=lambda i: (-len(answers[i]), i))
        best = answers[order[0]] if answers else "I am not sure."
        text = json.dumps({"desired rank": order, "response": best})
        if self.model == "echo/sloppy" and len(request.messages) == 2:
            text = "The longest answer is the best one."
        tokens_in = sum(len(m["content"]) for m in request.messages) // 4
        return ChatReply(text, Usage(1, tokens_in, len(text) // 4, self.price(tokens_in, len(text) // 4)))


@hookimpl
def register_oracles(register) -> None:
    register("echo", EchoChat, "example chat backend: longest first, echoes the longest (offline)", options=EchoOptions)
