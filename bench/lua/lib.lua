-- Shared helpers for the wrk scripts of bench/run.sh (loaded with dofile by each script).
local M = {}

-- Lines of a file (paths, keys), without empty ones.
function M.lines(path)
  local out = {}
  local f = assert(io.open(path, "r"), "cannot open " .. path)
  for line in f:lines() do
    if line ~= "" then out[#out + 1] = line end
  end
  f:close()
  assert(#out > 0, path .. " is empty")
  return out
end

-- Request headers: wrk's own plus Authorization from $BENCH_AUTH (a bearer token) when set.
function M.headers(extra)
  local h = {}
  for k, v in pairs(wrk.headers) do h[k] = v end
  local token = os.getenv("BENCH_AUTH")
  if token and token ~= "" then h["Authorization"] = "Bearer " .. token end
  for k, v in pairs(extra or {}) do h[k] = v end
  return h
end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
-- Standard base64 with padding (etcd's JSON gateway takes keys and values in base64).
function M.b64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

-- The body of a record of n bytes (the same bytes for every contender).
function M.body(n)
  return string.rep("x", n)
end

-- Seeds math.random differently in each thread.
function M.seed()
  local addr = tonumber((tostring({}):match("0x(%x+)")) or "0", 16) or 0
  math.randomseed(os.time() + math.floor(os.clock() * 1e6) + addr % 1000003)
end

-- One machine-readable line that bench/run.sh parses: throughput and latency percentiles.
function M.report(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH rps=%.2f p50_ms=%.3f p99_ms=%.3f requests=%d bytes=%d errors=%d non2xx=%d timeouts=%d\n",
    summary.requests / secs,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    summary.requests, summary.bytes,
    e.connect + e.read + e.write + e.timeout, e.status, e.timeout))
end

return M
