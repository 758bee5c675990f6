-- wrk script: POSTs BENCH_BODY (a file) to the server, with the event's
-- userId varied per request (or per event in a batch), so that ordering
-- keys differ as they do in real traffic. BENCH_AUTH is the Authorization
-- header value; BENCH_BATCH > 0 wraps that many events in {"batch":[...]}.
local f = assert(io.open(os.getenv("BENCH_BODY"), "r"))
local template = f:read("*a"):gsub("%s+$", "")
f:close()
local batch = tonumber(os.getenv("BENCH_BATCH") or "0")
local counter = 0
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = os.getenv("BENCH_AUTH")
end

local function event()
  counter = counter + 1
  return (template:gsub("USERID", "user-" .. tostring(tid) .. "-" .. tostring(counter % 5000)))
end

function request()
  local body
  if batch > 0 then
    local parts = {}
    for i = 1, batch do parts[i] = event() end
    body = '{"batch":[' .. table.concat(parts, ",") .. ']}'
  else
    body = event()
  end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  io.write(string.format("BENCH rps=%.1f p50_us=%d p99_us=%d errors=%d non2xx=%d requests=%d duration_us=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, summary.requests, summary.duration))
  -- BENCH_HIST: append the latency histogram ("µs count" per distinct
  -- value) to that file, so that the stretches of one row can be merged
  -- into exact percentiles.
  local hist = os.getenv("BENCH_HIST")
  if hist and hist ~= "" then
    local out = assert(io.open(hist, "a"))
    for i = 1, #latency do
      local v, c = latency(i)
      out:write(v, " ", c, "\n")
    end
    out:close()
  end
end
