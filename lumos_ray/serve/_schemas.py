"""Request schemas of the OpenAI-compatible model routes.

Why our own schemas and not vLLM's request classes: the gateway must reject bad input
before any model work and document the routes in ``/openapi.json``, without importing
vLLM (the gateway replica stays small). So these models declare the fields OpenAI
clients send, each typed and bounded, and allow unknown fields through
(``extra="allow"``): vLLM's extensions (``ignore_eos``, ``top_k``,
``return_token_ids``, structured output, ...) reach the engine untouched and are
validated there by vLLM's own request classes. Strings are bounded by the gateway's
body limit (``gateway.max_body_bytes``), lists by ``max_length`` here.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "MAX_BATCH_INPUTS",
    "MAX_MESSAGES",
    "ChatCompletionBody",
    "ChatCompletionResponse",
    "ChatMessage",
    "CompletionBody",
    "CompletionResponse",
    "EmbeddingBody",
    "EmbeddingResponse",
    "ErrorResponse",
    "ModelCard",
    "ModelList",
]

#: Messages per chat request: far above any real conversation, low enough that a
#: single body cannot make the template renderer loop over millions of items.
MAX_MESSAGES = 4096
#: Prompts per completion request and inputs per embedding request (OpenAI: 2048).
MAX_BATCH_INPUTS = 2048
_MAX_TOKENS = 1_000_000
_NAME = 256

_Stops = Annotated[list[str], Field(max_length=16)]
_Texts = Annotated[list[str], Field(min_length=1, max_length=MAX_BATCH_INPUTS)]
_TokenIds = Annotated[list[int], Field(min_length=1, max_length=_MAX_TOKENS)]
_TokenIdLists = Annotated[list[_TokenIds], Field(min_length=1, max_length=MAX_BATCH_INPUTS)]


class _Open(BaseModel):
    # Unknown fields pass through to the engine (vLLM extensions, newer OpenAI fields).
    model_config = ConfigDict(extra="allow")


class FunctionCall(_Open):
    """The function an assistant's tool call names, with its arguments as JSON text."""

    name: str = Field(max_length=_NAME)
    arguments: str = Field(description="The arguments, as JSON text.")


class ToolCallItem(_Open):
    """One tool call of an assistant message (OpenAI's shape): chat templates read
    ``function.name`` and ``function.arguments`` of each, so a call without them is
    refused here (422) rather than failing inside the engine."""

    id: str = Field(max_length=_NAME)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    """One message of a conversation (OpenAI's shapes; content parts as objects)."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = Field(
        default=None, description="Text, or a list of content parts."
    )
    name: str | None = Field(default=None, max_length=_NAME)
    tool_calls: list[ToolCallItem] | None = Field(default=None, max_length=1024)
    tool_call_id: str | None = Field(default=None, max_length=_NAME)


class _Sampling(_Open):
    model: str | None = Field(
        default=None,
        max_length=_NAME,
        description="A served base model or a registered LoRA adapter; optional when "
        "only one model is served.",
    )
    max_tokens: int | None = Field(default=None, ge=1, le=_MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    stop: str | _Stops | None = Field(default=None, description="Up to 16 stop strings.")
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = Field(default=None, max_length=1024)
    user: str | None = Field(default=None, max_length=_NAME)


class ChatCompletionBody(_Sampling):
    """``POST /v1/chat/completions`` (OpenAI Chat Completions)."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=_MAX_TOKENS)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=512)
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = Field(
        default=None, description='"none", "auto", "required" or a named function.'
    )
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)


class CompletionBody(_Sampling):
    """``POST /v1/completions`` (OpenAI legacy Completions)."""

    prompt: str | _Texts | _TokenIds | _TokenIdLists = Field(
        description="Text, texts, token ids, or lists of token ids."
    )
    echo: bool | None = None
    logprobs: int | None = Field(default=None, ge=0, le=20)
    suffix: str | None = None


class EmbeddingBody(_Open):
    """``POST /v1/embeddings`` (OpenAI Embeddings)."""

    model: str | None = Field(
        default=None, max_length=_NAME, description="Default: the served embedding model."
    )
    input: str | _Texts = Field(description="A text or up to 2048 texts.")
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=_NAME)


# -- responses (documented in /openapi.json; the engine's answers pass through) --------


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class ChatChoice(_Open):
    index: int
    message: ChatMessage
    finish_reason: str | None = None


class ChatCompletionResponse(_Open):
    """OpenAI's ``chat.completion`` object (``stream: true``: server-sent
    ``chat.completion.chunk`` events instead)."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None


class CompletionChoice(_Open):
    index: int
    text: str
    finish_reason: str | None = None


class CompletionResponse(_Open):
    """OpenAI's ``text_completion`` object."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str = Field(description="Floats, or base64 of float32s.")


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    data: list[EmbeddingItem]
    usage: Usage


class ModelCard(_Open):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    kind: str | None = Field(default=None, description="llm, embedding or lora")
    parent: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(_Open):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = Field(default=None, description="Quote it when reporting.")


class ErrorResponse(BaseModel):
    """Every error: OpenAI's shape plus our code, a fix and the request id."""

    error: ErrorDetail
