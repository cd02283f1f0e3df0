-- wrk: POSTs the pre-signed application/jwt bodies of the file $BODIES (one per line) to
-- $WRK_PATH, each body once: thread k of n takes lines k, k+n, ... A thread that runs out
-- starts its bodies again and says so (`wrapped` in the last line: the figures then count
-- repeats, which are answered differently, and must not be used).
-- The last line, `wrk: ...`, is what scripts/bench reads.
local threads = {}
local count = 0

function setup(thread)
  thread:set("id", count)
  count = count + 1
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  local path = os.getenv("WRK_PATH")
  local headers = { ["Content-Type"] = "application/jwt" }
  requests = {}
  local i = 0
  for line in io.lines(os.getenv("BODIES")) do
    if i % n == id then
      requests[#requests + 1] = wrk.format("POST", path, headers, line)
    end
    i = i + 1
  end
  sent = 0
  wrapped = 0
end

function request()
  sent = sent + 1
  if sent > #requests then
    sent = 1
    wrapped = 1
  end
  return requests[sent]
end

function done(summary, latency, requests)
  local wrapped = 0
  for _, t in ipairs(threads) do
    wrapped = wrapped + t:get("wrapped")
  end
  local e = summary.errors
  io.write(string.format(
    "wrk: requests=%d seconds=%.3f rps=%.0f p50_ms=%.2f p99_ms=%.2f bytes=%d status_errors=%d socket_errors=%d wrapped=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.bytes,
    e.status, e.connect + e.read + e.write + e.timeout, wrapped))
end
