-- GET a random path from a file of paths (records, key listings, store listings, static files).
-- wrk -s bench/lua/get.lua URL -- PATHS_FILE          ($BENCH_AUTH: bearer token, optional)
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
local reqs

function init(args)
  lib.seed()
  local headers = lib.headers()
  reqs = {}
  for i, path in ipairs(lib.lines(args[1])) do reqs[i] = wrk.format("GET", path, headers) end
end

function request()
  return reqs[math.random(#reqs)]
end

done = lib.report
