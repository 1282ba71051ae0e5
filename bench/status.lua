-- wrk script: count the responses by status code and print them after the run,
-- one "status CODE COUNT" line each (bench/run.sh uses it for the overload scenario).
-- The response() callback makes wrk parse every response, so it is used only
-- where the status mix is the result, not where wrk's speed matters.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      io.write(string.format("status %d %d\n", code, count))
    end
  end
end
