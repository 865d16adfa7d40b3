"""CPU of the translation path's own work, without the network: a chat request built and its answer read, and a
100-chunk stream read (the bench's: bench/proxybench/targets.py), on one core.

    PYTHONPATH=shared:gateway:bench python bench/translation_profile.py [--provider anthropic|gemini]
        [--stream] [--requests 2000] [--profile]

Two rows: `litellm steps` (every shape judged wrong, so LiteLLM's transformation and chunk parser serve
everything: the path before its own mappings) and `own mapping` (the bench's shapes, which LiteLLM's steps
agreed with). --profile prints cProfile's top functions of each. The request is bench/wrk/chat.lua's, the answers
bench/upstream/nginx.conf's.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from proxybench.targets import anthropic_stream, gemini_stream
from routeiq_gateway.providers.http1 import Pool
from routeiq_gateway.providers.litellm_client import LiteLLMProvider
from routeiq_gateway.providers.translate_litellm import NoLogging
from routeiq_gateway.providers.translated import TranslatedProvider
from routeiq_gateway.providers.translated_stream import TranslatedStream
from routeiq_gateway.routing.deployments import Deployment, build_deployment
from routeiq_shared.config_schema import ModelEntry, RouterSettings

BODY = {
    "model": "bench-model",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "max_tokens": 64,
    "temperature": 0,
}
GEMINI_ANSWER = (
    b'{"candidates":[{"content":{"parts":[{"text":"Hello! The capital of France is Paris. Is there anything else '
    b'you would like to know?"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount"'
    b':24,"candidatesTokenCount":19,"totalTokenCount":43},"modelVersion":"bench-model","responseId":"bench-gemini"}'
)
ANSWER = (
    b'{"id":"msg_bench000000000000000000","type":"message","role":"assistant","model":"bench-model",'
    b'"content":[{"type":"text","text":"Hello! The capital of France is Paris. Is there anything else you would '
    b'like to know?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":24,"output_tokens":19}}'
)


class Recorded:
    """An upstream response already received, handed over in 16 KiB reads (what TranslatedStream reads)."""

    headers: tuple[tuple[bytes, bytes], ...] = ()

    def __init__(self, raw: bytes) -> None:
        self._raw = raw

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self._raw), 16384):
            yield self._raw[start : start + 16384]

    def release(self) -> None:
        return None


def litellm_parser(translation: Any, dep: Deployment) -> Any:
    """The provider's LiteLLM chunk parser alone, none of the own mappings around it."""
    if dep.provider == "gemini":
        return translation._iterator(streaming_response=None, sync_stream=False, logging_obj=NoLogging()).chunk_parser
    return translation._iterator(streaming_response=None, sync_stream=False, json_mode=False).chunk_parser


async def one(provider: TranslatedProvider, dep: Deployment, stream: bool, litellm_only: bool = False) -> None:
    prepared = provider.prepare(dep, BODY, stream)
    translation: Any = provider._for(dep)
    if not stream:
        translation.answer(dep, prepared, GEMINI_ANSWER if dep.provider == "gemini" else ANSWER, ())
        return
    raw = (gemini_stream() if dep.provider == "gemini" else anthropic_stream()).encode()
    parse = litellm_parser(translation, dep) if litellm_only else translation.chunk_parser(prepared)
    events = TranslatedStream(Recorded(raw), parse, dep, False, 10.0)  # type: ignore[arg-type]
    async for _ in events:
        pass


async def measure(args: argparse.Namespace) -> None:
    model = "gemini-2.0-flash" if args.provider == "gemini" else "bench-model"  # as the bench's deployments
    params = {"model": f"{args.provider}/{model}", "api_base": "http://x", "api_key": "k"}
    dep = build_deployment(ModelEntry.model_validate({"model_name": "m", "litellm_params": params}), RouterSettings())
    what = "100-chunk stream read" if args.stream else "request built + answer read"
    for name, own in (("litellm steps", False), ("own mapping", True)):
        provider = TranslatedProvider(Pool(), LiteLLMProvider())
        await one(provider, dep, args.stream)  # the first of each shape is judged
        judge: Any = getattr(provider._for(dep), "judge", None)
        if not own:  # every shape judged wrong: LiteLLM's steps serve everything
            judge.requests = dict.fromkeys(judge.requests)
            judge.answers = dict.fromkeys(judge.answers, False)
            judge.chunks = dict.fromkeys(judge.chunks, False)
        for _ in range(20):
            await one(provider, dep, args.stream, not own)
        started = time.process_time()
        for _ in range(args.requests):
            await one(provider, dep, args.stream, not own)
        per = (time.process_time() - started) / args.requests * 1e6
        print(f"{args.provider} {name:>14}: {per:8.1f} us CPU per {what}")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(min(args.requests, 300)):
                await one(provider, dep, args.stream, not own)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", choices=("anthropic", "gemini"), default="anthropic")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
