-- wrk script: replays distinct pre-signed relay requests, one per line of the file
-- "<timestamp>\t<signature>\t<body>" given as the first script argument; the optional second
-- argument is a per-connection pause in ms (paced runs). done() prints one JSON line.
local requests = {}
local index = 0
local pause = 0

function init(args)
  for line in io.lines(args[1]) do
    local ts, sig, body = line:match("^(%d+)\t([^\t]+)\t(.*)$")
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["X-Otp-Timestamp"] = ts,
      ["X-Otp-Signature"] = sig,
    }, body)
  end
  pause = tonumber(args[2] or "0")
end

function request()
  index = index + 1
  if index > #requests then index = 1 end
  return requests[index]
end

function delay()
  return pause
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"socket_errors":%d,"p50_us":%d,"p90_us":%d,'
    .. '"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max))
end
