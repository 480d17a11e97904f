-- PUT a body of N bytes to a random path from a file of paths.
-- wrk -s bench/lua/put.lua URL -- PATHS_FILE BODY_BYTES   ($BENCH_AUTH: bearer token, optional)
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
local reqs

function init(args)
  lib.seed()
  local body = lib.body(tonumber(args[2]))
  local headers = lib.headers({ ["Content-Type"] = "application/octet-stream" })
  reqs = {}
  for i, path in ipairs(lib.lines(args[1])) do reqs[i] = wrk.format("PUT", path, headers, body) end
end

function request()
  return reqs[math.random(#reqs)]
end

done = lib.report
