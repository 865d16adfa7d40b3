-- wrk script: cycles through pre-rendered chat completion bodies, one JSON object a line (real, varied prompts:
-- bench/proxy_throughput.py writes them from the MMLU CSV when routeiq-auto runs, and every target of that run
-- gets the same bodies, so the fixed-model and `model: auto` rows compare the same work).
--   BENCH_BODIES=bodies.jsonl BENCH_API_KEY=sk-bench-master wrk -t1 -c32 -d15s --latency -s bench/wrk/prompts.lua URL
-- The requests are formatted once in init(); request() only hands out the next one, so wrk stays cheap.

local api_key = os.getenv("BENCH_API_KEY") or "sk-bench-master"
local path = os.getenv("BENCH_BODIES")
local requests = {}
local next_index = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. api_key }
  for line in io.lines(path) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", nil, headers, line)
    end
  end
  if #requests == 0 then
    error("no request bodies in " .. tostring(path))
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
