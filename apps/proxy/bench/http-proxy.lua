-- wrk through an HTTP proxy: wrk dials the URL's host:port (the proxy's
-- outbound listener); each request goes in absolute form for the authority in
-- BENCH_PROXY_AUTHORITY (`GET http://<authority>/1k HTTP/1.1`), as a client
-- with HTTP_PROXY set sends it. Runs before wrk builds its request.
local authority = os.getenv("BENCH_PROXY_AUTHORITY")
if authority == nil or authority == "" then
  error("BENCH_PROXY_AUTHORITY is not set")
end
wrk.path = "http://" .. authority .. wrk.path
wrk.headers["Host"] = authority
