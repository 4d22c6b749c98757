"""What differs between providers: default models, where keys live, and which structured output each accepts.

Kept apart from the transport so the policy can be read (and tested) in one place.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cyclealign.config import OracleConfig


class OracleSetupError(RuntimeError):
    """The oracle cannot be used as configured (missing key, unknown model, unreachable server, …)."""


@dataclass(frozen=True)
class Alias:
    """A registered oracle name and the defaults it brings."""

    name: str
    default_model: str | None = None
    key_env: str | None = None  # where the key is read from when oracle.api_key_env is unset
    key_required: bool = False  # a missing key is an error at construction (unless api_base points elsewhere)
    local: bool = False  # an OpenAI-compatible server we talk to directly: free, dummy key, llama.cpp schema


ALIASES: dict[str, Alias] = {
    "chatgpt": Alias("chatgpt", "gpt-3.5-turbo", "OPENAI_API_KEY", key_required=True),
    "gpt-4": Alias("gpt-4", "gpt-4", "OPENAI_API_KEY", key_required=True),
    "local": Alias("local", local=True),
    "litellm": Alias("litellm"),
}


def alias_for(name: str) -> Alias:
    """The alias behind an oracle name; unknown names (a plugin reusing the class) get plain litellm defaults."""
    return ALIASES.get(name, Alias(name))


# ---------------------------------------------------------------- keys
def read_api_key(config: OracleConfig, default_env: str | None) -> str | None:
    """The API key from ``oracle.api_key_file`` or the environment; never from the config file itself."""
    if config.api_key_file is not None:
        path = Path(config.api_key_file).expanduser()
        if not path.is_file():
            raise OracleSetupError(f"oracle.api_key_file: {path} does not exist")
        lines = path.read_text().strip().splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise OracleSetupError(f"oracle.api_key_file: {path} is empty")
        return key
    env = config.api_key_env or default_env
    if env is None:
        return None
    return os.environ.get(env) or None  # an empty variable counts as unset


# ---------------------------------------------------------------- structured output
FormatMode = Literal["schema_object", "json_schema", "json_object", "none"]
DOWNGRADE: dict[FormatMode, FormatMode] = {
    "schema_object": "json_object",
    "json_schema": "json_object",
    "json_object": "none",
    "none": "none",
}


def choose_format(model: str, *, local: bool, litellm: Any) -> FormatMode:
    """The strongest structured output the provider accepts.

    - local servers: ``{"type": "json_object", "schema": …}``, which llama.cpp turns
      into a grammar (vLLM and ollama read it as plain JSON mode);
    - models litellm knows to take a schema (gpt-4o, …): OpenAI ``json_schema``;
    - models with JSON mode only (gpt-3.5-turbo): ``json_object``;
    - others (gpt-4): nothing, and the parser copes with prose around the JSON.
    A provider that still rejects the format is downgraded at run time (see ``DOWNGRADE``).
    """
    if local:
        return "schema_object"
    try:
        if litellm.supports_response_schema(model=model):
            return "json_schema"
    except Exception:  # litellm raises for models it does not know
        pass
    try:
        if "response_format" in (litellm.get_supported_openai_params(model=model) or []):
            return "json_object"
    except Exception:
        pass
    return "none"


def openai_ranking_schema(n: int) -> dict[str, Any]:
    """The ranking schema in the subset OpenAI's strict mode accepts (no enums of arrays, no lengths)."""
    return {
        "type": "object",
        "properties": {
            "desired rank": {"type": "array", "items": {"type": "integer", "enum": list(range(n))}},
            "response": {"type": "string"},
        },
        "required": ["desired rank", "response"],
        "additionalProperties": False,
    }


def response_format(
    mode: FormatMode, schema: dict[str, Any] | None, *, strict_schema: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """The ``response_format`` request field for a mode (``strict_schema``: an OpenAI-strict variant)."""
    if mode == "schema_object":
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    if mode == "json_schema" and (strict_schema or schema):
        return {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": strict_schema or schema, "strict": strict_schema is not None},
        }
    if mode in ("json_schema", "json_object"):
        return {"type": "json_object"}
    return None


def rejects_format(error: Exception) -> bool:
    """A 400 that blames the ``response_format`` field: retry with a weaker format instead of failing."""
    text = str(error).lower()
    return "response_format" in text or "json_schema" in text or "json_object" in text


# ---------------------------------------------------------------- local servers
def local_model_name(model: str, litellm: Any) -> str:
    """A litellm model string for a local server: provider-prefixed names are kept, bare ones get ``openai/``.

    ``llama3`` becomes ``openai/llama3``; ``ollama/llama3`` stays; ``meta-llama/Llama-3-8B``
    (a vLLM model id, not a litellm provider) becomes ``openai/meta-llama/Llama-3-8B``.
    """
    providers = {str(getattr(p, "value", p)) for p in getattr(litellm, "provider_list", [])}
    prefix = model.split("/", 1)[0]
    return model if "/" in model and prefix in providers else f"openai/{model}"


def served_models(api_base: str, timeout_s: float = 5.0) -> list[str]:
    """The model ids an OpenAI-compatible server lists at ``/models``."""
    url = api_base.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            data = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        raise OracleSetupError(f"oracle.api_base: {url} answered HTTP {e.code}; set oracle.model explicitly") from None
    except (urllib.error.URLError, OSError) as e:
        raise OracleSetupError(f"oracle.api_base: {api_base} is unreachable ({getattr(e, 'reason', e)})") from None
    except json.JSONDecodeError:
        raise OracleSetupError(f"oracle.api_base: {url} did not answer JSON; set oracle.model explicitly") from None
    items = data.get("data", []) if isinstance(data, dict) else []
    return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]


def discover_model(api_base: str) -> str:
    """The one model a local server serves (vLLM and ollama reject requests naming another)."""
    ids = served_models(api_base)
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise OracleSetupError(f"oracle.api_base: {api_base} lists no models; set oracle.model")
    raise OracleSetupError(f"oracle.api_base: {api_base} serves several models ({', '.join(ids)}); set oracle.model")


def check_reachable(api_base: str, timeout_s: float = 5.0) -> None:
    """One cheap GET before any expensive work, so a wrong ``oracle.api_base`` fails in seconds, clearly."""
    url = api_base.rstrip("/") + "/models"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError:
        return  # it answered: reachable (some servers protect /models)
    except (urllib.error.URLError, OSError) as e:
        raise OracleSetupError(f"oracle.api_base: {api_base} is unreachable ({getattr(e, 'reason', e)})") from None
