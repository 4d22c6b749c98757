"""What differs between providers: default models, where keys live, and which structured output each accepts.

Kept apart from the transport so the policy can be read (and tested) in one place.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Literal

from cyclealign.errors import OracleSetupError
from cyclealign.oracle.secrets import redact


@dataclass(frozen=True)
class Alias:
    """A registered oracle name and the defaults it brings."""

    name: str
    default_model: str | None = None
    key_env: str | None = None  # where the key is read from when oracle.options.api_key_env is unset
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


_STRICT_DROPS = ("minLength", "maxLength", "minItems", "maxItems")


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` in the subset OpenAI's strict mode accepts: no length bounds, no enums of arrays.

    An enum of lists (the ranking schema's list of permutations) becomes an array
    of the values they contain, so the ranking still reads as a list of answer numbers.
    """
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _STRICT_DROPS:
            continue
        if key == "enum" and value and all(isinstance(v, list) for v in value):
            items = sorted({x for v in value for x in v})
            out.update({"type": "array", "items": {"type": "integer", "enum": items}})
        elif key == "properties":
            out[key] = {name: strict_schema(sub) for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            sub = strict_schema(value)
            if "enum" in sub and "type" not in sub and all(isinstance(v, int) for v in sub["enum"]):
                sub = {"type": "integer", **sub}
            out[key] = sub
        else:
            out[key] = value
    return out


def response_format(mode: FormatMode, schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``response_format`` request field for a mode.

    ``json_schema`` goes strict when the schema can be (every property required,
    no others allowed), after :func:`strict_schema` has removed what strict mode rejects.
    """
    if mode == "schema_object":
        return {"type": "json_object", "schema": schema} if schema else {"type": "json_object"}
    if mode == "json_schema" and schema:
        strict = strict_schema(schema)
        can_be_strict = strict.get("additionalProperties") is False and set(strict.get("required", [])) == set(
            strict.get("properties", {})
        )
        return {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": strict if can_be_strict else schema, "strict": can_be_strict},
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
        raise OracleSetupError(
            f"oracle.options.api_base: {url} answered HTTP {e.code}; set oracle.model explicitly"
        ) from None
    except (urllib.error.URLError, OSError) as e:
        raise OracleSetupError(
            f"oracle.options.api_base: {api_base} is unreachable ({getattr(e, 'reason', e)})"
        ) from None
    except json.JSONDecodeError:
        raise OracleSetupError(
            f"oracle.options.api_base: {url} did not answer JSON; set oracle.model explicitly"
        ) from None
    items = data.get("data", []) if isinstance(data, dict) else []
    return [str(m["id"]) for m in items if isinstance(m, dict) and "id" in m]


def discover_model(api_base: str) -> str:
    """The one model a local server serves (vLLM and ollama reject requests naming another)."""
    ids = served_models(api_base)
    if len(ids) == 1:
        return ids[0]
    if not ids:
        raise OracleSetupError(f"oracle.options.api_base: {api_base} lists no models; set oracle.model")
    raise OracleSetupError(
        f"oracle.options.api_base: {api_base} serves several models ({', '.join(ids)}); set oracle.model"
    )


def check_reachable(api_base: str, timeout_s: float = 5.0, api_key: str | None = None) -> None:
    """One cheap GET before any expensive work, so a wrong ``oracle.options.api_base`` fails in seconds, clearly.

    With ``api_key`` the listing is asked for with the key, as the chats will be: a server that
    rejects it (401/403) stops the run before it starts; any other answer counts as reachable.
    """
    url = api_base.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s):
            return
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            detail = _error_message(e)
            said = f": {detail}" if detail else ""
            raise OracleSetupError(
                f"oracle.options.api_base: {api_base} rejected the API key (HTTP {e.code}{said}); "
                "check oracle.options.api_key_env / oracle.options.api_key_file"
            ) from None
        return  # it answered: reachable (some servers do not list models)
    except (urllib.error.URLError, OSError) as e:
        raise OracleSetupError(
            f"oracle.options.api_base: {api_base} is unreachable ({getattr(e, 'reason', e)})"
        ) from None


def _error_message(error: urllib.error.HTTPError) -> str:
    """The provider's own words from an error body (OpenAI's ``{"error": {"message": …}}``), short."""
    try:
        body = json.loads(error.read() or b"{}")
        message = body.get("error", {}).get("message") if isinstance(body.get("error"), dict) else body.get("error")
    except (OSError, ValueError, AttributeError):
        message = None
    return redact(str(message)[:300]) if message else ""


_AUTH_NAMES = ("AuthenticationError", "PermissionDeniedError")


def fatal_kind(error: BaseException) -> str | None:
    """``auth``, ``model_not_found`` or ``quota`` when no retry and no later call can succeed; else None.

    By litellm's class where it has one (401/403, 404, a 429 for an exhausted quota), by the
    HTTP status otherwise, and by the message for a model the provider does not know.
    """
    name, text = type(error).__name__, str(error).lower()
    status = getattr(error, "status_code", None)
    if name in _AUTH_NAMES or status in (401, 403):
        return "auth"
    if name == "NotFoundError" or status == 404:
        return "model_not_found"
    if name == "BadRequestError" and "model" in text and any(s in text for s in _MODEL_MISSING):
        return "model_not_found"
    if (name == "RateLimitError" or status == 429) and ("quota" in text or "billing" in text):
        return "quota"
    return None


def network_kind(error: BaseException) -> str | None:
    """``timeout`` or ``unreachable`` when the cause, anywhere down the exception chain, is the network.

    litellm reports a refused connection as a 500 ``InternalServerError`` whose cause is the real one.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        if isinstance(current, TimeoutError) or name in ("APITimeoutError", "ReadTimeout", "ConnectTimeout"):
            return "timeout"
        if isinstance(current, OSError) or name in ("APIConnectionError", "ConnectError", "RemoteProtocolError"):
            return "unreachable"
        current = current.__cause__ or current.__context__
    return None


_MODEL_MISSING = (
    "not found",
    "does not exist",
    "model_not_found",
    "unknown model",
    "not a valid model",
    "llm provider not provided",
)
