-- wrk: GETs with the headers wrk is given (-H); the last line, `wrk: ...`, is what
-- scripts/bench reads: the rate, latency, and what shows every answer was the intended
-- one (no status outside 2xx/3xx, no socket error, and the bytes per answer, which tell a
-- 200 with its body from a 304 without).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "wrk: requests=%d seconds=%.3f rps=%.0f p50_ms=%.2f p99_ms=%.2f bytes=%d status_errors=%d socket_errors=%d wrapped=0\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.bytes,
    e.status, e.connect + e.read + e.write + e.timeout))
end
