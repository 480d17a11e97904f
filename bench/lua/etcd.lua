-- etcd's JSON gateway (v3 API over HTTP): the reference for durable writes and ranged reads.
-- wrk -s bench/lua/etcd.lua http://127.0.0.1:PORT -- MODE KEYS_FILE [ARG]
--   put    KEYS_FILE BODY_BYTES   POST /v3/kv/put   of a random key (value of BODY_BYTES)
--   get    KEYS_FILE              POST /v3/kv/range of one random key
--   list   KEYS_FILE LIMIT        POST /v3/kv/range: LIMIT keys after a random key (exclusive)
--   prefix KEYS_FILE LIMIT        POST /v3/kv/range: up to LIMIT keys with a random prefix
--   mixed  KEYS_FILE BODY_BYTES   90% get, 10% put
-- For list, KEYS_FILE holds start keys; for prefix, prefixes.
local lib = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "lib.lua")
local gets, puts, mode

-- The smallest key greater than every key starting with p (etcd's range_end for a prefix).
local function prefix_end(p)
  return p:sub(1, -2) .. string.char(p:byte(-1) + 1)
end

function init(args)
  lib.seed()
  mode = args[1]
  local keys = lib.lines(args[2])
  local headers = lib.headers({ ["Content-Type"] = "application/json" })
  gets, puts = {}, {}
  local value = (mode == "put" or mode == "mixed") and lib.b64(lib.body(tonumber(args[3]))) or nil
  for i, key in ipairs(keys) do
    local body
    if mode == "list" then
      body = string.format('{"key":"%s","range_end":"%s","limit":%d}',
        lib.b64(key .. "\0"), lib.b64(prefix_end(key:sub(1, 1))), tonumber(args[3]))
    elseif mode == "prefix" then
      body = string.format('{"key":"%s","range_end":"%s","limit":%d}',
        lib.b64(key), lib.b64(prefix_end(key)), tonumber(args[3]))
    else
      body = string.format('{"key":"%s"}', lib.b64(key))
    end
    gets[i] = wrk.format("POST", "/v3/kv/range", headers, body)
    if value then
      puts[i] = wrk.format("POST", "/v3/kv/put", headers,
        string.format('{"key":"%s","value":"%s"}', lib.b64(key), value))
    end
  end
end

function request()
  if mode == "put" or (mode == "mixed" and math.random(100) <= 10) then
    return puts[math.random(#puts)]
  end
  return gets[math.random(#gets)]
end

done = lib.report
