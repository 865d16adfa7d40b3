"""CPU per request of the translation path's own work (request built, answer read), without the network.

    PYTHONPATH=shared:gateway python bench/translation_profile.py [--provider anthropic|gemini] [--requests 3000]
        [--profile]

Two rows: `litellm steps` (every shape judged wrong, so LiteLLM's transformation serves every request: the
path before its own mapping) and `own mapping` (the bench's request and answer shapes, which LiteLLM agreed
with). --profile prints cProfile's top functions of each. The bench's request and answer are
bench/wrk/chat.lua's and bench/upstream/nginx.conf's.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from routeiq_gateway.providers.http1 import Pool
from routeiq_gateway.providers.litellm_client import LiteLLMProvider
from routeiq_gateway.providers.translated import TranslatedProvider
from routeiq_gateway.routing.deployments import build_deployment
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


def one(provider: TranslatedProvider, dep: Any) -> None:
    prepared = provider.prepare(dep, BODY, False)
    provider._for(dep).answer(dep, prepared, GEMINI_ANSWER if dep.provider == "gemini" else ANSWER, ())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--provider", choices=("anthropic", "gemini"), default="anthropic")
    args = parser.parse_args()
    params = {"model": f"{args.provider}/bench-model", "api_base": "http://x", "api_key": "k"}
    entry = ModelEntry.model_validate({"model_name": "bench-model", "litellm_params": params})
    dep = build_deployment(entry, RouterSettings())
    for name, own in (("litellm steps", False), ("own mapping", True)):
        provider = TranslatedProvider(Pool(), LiteLLMProvider())
        one(provider, dep)  # the first of each shape is judged
        translation: Any = provider._for(dep)
        judge = getattr(translation, "judge", None)
        if judge is None:
            if own:
                continue  # no own mapping for this provider
        elif not own:  # every shape judged wrong: LiteLLM's steps serve every request
            judge.requests = dict.fromkeys(judge.requests)
            judge.answers = dict.fromkeys(judge.answers, False)
        for _ in range(200):
            one(provider, dep)
        started = time.process_time()
        for _ in range(args.requests):
            one(provider, dep)
        per = (time.process_time() - started) / args.requests * 1e6
        print(f"{name:>14}: {per:8.1f} us CPU per request (request built + answer read)")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(min(args.requests, 1000)):
                one(provider, dep)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
