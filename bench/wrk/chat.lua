-- wrk script: every request is the same small, non-streaming OpenAI chat completion.
-- bench/proxy_throughput.py sets BENCH_MODEL and BENCH_API_KEY; run by hand, the defaults below apply:
--   BENCH_API_KEY=sk-bench-master wrk -t1 -c32 -d15s --latency -s bench/wrk/chat.lua http://127.0.0.1:4000/v1/chat/completions
-- No response() or per-request Lua callback: those would make wrk itself the bottleneck on a shared core.

local model = os.getenv("BENCH_MODEL") or "bench-model"
local api_key = os.getenv("BENCH_API_KEY") or "sk-bench-master"
local stream = os.getenv("BENCH_STREAM") == "1"  -- the stream rows: the same request with "stream": true

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. api_key
wrk.body = '{"model":"' .. model .. '","messages":['
  .. '{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"What is the capital of France?"}'
  .. '],"max_tokens":64,"temperature":0' .. (stream and ',"stream":true' or '') .. '}'
