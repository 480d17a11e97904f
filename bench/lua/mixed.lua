-- A read/write mix over one set of records: GET most of the time, PUT (BODY_BYTES) the rest.
-- wrk -s bench/lua/mixed.lua URL -- PATHS_FILE BODY_BYTES WRITE_PERCENT   (default 10: 90/10)
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
local gets, puts, write_percent

function init(args)
  lib.seed()
  local body = lib.body(tonumber(args[2]))
  write_percent = tonumber(args[3] or "10")
  local get_headers = lib.headers()
  local put_headers = lib.headers({ ["Content-Type"] = "application/octet-stream" })
  gets, puts = {}, {}
  for i, path in ipairs(lib.lines(args[1])) do
    gets[i] = wrk.format("GET", path, get_headers)
    puts[i] = wrk.format("PUT", path, put_headers, body)
  end
end

function request()
  if math.random(100) <= write_percent then return puts[math.random(#puts)] end
  return gets[math.random(#gets)]
end

done = lib.report
