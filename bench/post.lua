-- wrk script of the benchmark (bench/loadgen.py): POSTs one pre-built body,
-- read from the file named by $BENCH_BODY, with Content-Type $BENCH_CTYPE,
-- and prints one JSON line of totals and latency percentiles at the end.
local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE")

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "errors_status": %d, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_timeout": %d, ' ..
    '"latency_p50_us": %.1f, "latency_p99_us": %.1f}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
