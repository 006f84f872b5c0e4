// Node.js socket.io 4.8 reference node for sioscale: the same event contract and the same
// `x-served-by: <node id>` header as targets/app.py (docs/contracts.md), so a finding can be
// checked against the reference implementation of Socket.IO itself.
//
//   node server.js --id n1 --port 8001 [--host 127.0.0.1] [--redis-url redis://...]
//                  [--adapter memory|redis|redis-sharded|redis-streams] [--recovery]
//                  [--certfile cert.pem --keyfile key.pem [--http2]] [--ping-interval S] [--ping-timeout S]
//
// --http2: serve TLS with node's HTTP/2 server (ALPN h2, allowHTTP1 for the WebSocket and clients
// that offer only http/1.1), as socket.io documents; an L4 TLS passthrough in front of such nodes
// is the issue 13 case where one HTTP/2 connection means one node.
// --ping-interval: Engine.IO pingInterval in seconds (default 25, socket.io's).
// --ping-timeout: Engine.IO pingTimeout in seconds (default 20, socket.io's).
// --adapter: redis = @socket.io/redis-adapter createAdapter (pub/sub), redis-sharded = its
// createShardedAdapter (SPUBLISH, Redis >= 7), redis-streams = @socket.io/redis-streams-adapter.
// A Redis adapter needs --redis-url; --redis-url alone means --adapter redis (the older flag set).
// --recovery: connectionStateRecovery (2 min, skipMiddlewares), which only memory and
// redis-streams can honour (pub/sub and sharded keep no session: every reconnect is fresh).
"use strict";

const fs = require("fs");
const http = require("http");
const https = require("https");
const http2 = require("http2");
const { monitorEventLoopDelay } = require("perf_hooks");
const { Server } = require("socket.io");

const HEADER = "x-served-by";
const ADAPTERS = ["memory", "redis", "redis-sharded", "redis-streams"];
const RECOVERY = { maxDisconnectionDuration: 2 * 60 * 1000, skipMiddlewares: true };
const LAG_RESOLUTION_MS = 10;

function parseArgs(argv) {
  const out = { id: process.env.SIOSCALE_NODE_ID || "n1", host: "127.0.0.1", port: 8001 };
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, "");
    if (key === "recovery") { out.recovery = true; continue; }  // a flag: takes no value
    if (key === "http2") { out.http2 = true; continue; }
    const val = argv[i + 1];
    if (val === undefined) throw new Error(`missing value for ${argv[i]}`);
    i++;
    if (key === "id") out.id = val;
    else if (key === "host") out.host = val;
    else if (key === "port") out.port = Number(val);
    else if (key === "redis-url") out.redisUrl = val;
    else if (key === "adapter") out.adapter = val;
    else if (key === "ping-interval") out.pingInterval = Number(val);
    else if (key === "ping-timeout") out.pingTimeout = Number(val);
    else if (key === "certfile") out.certfile = val;
    else if (key === "keyfile") out.keyfile = val;
    else throw new Error(`unknown option --${key}`);
  }
  out.adapter = out.adapter || (out.redisUrl ? "redis" : "memory");
  if (!ADAPTERS.includes(out.adapter)) throw new Error(`--adapter ${out.adapter}: one of ${ADAPTERS.join(", ")}`);
  if (out.adapter !== "memory" && !out.redisUrl) throw new Error(`--adapter ${out.adapter} needs --redis-url`);
  if (out.adapter === "memory" && out.redisUrl) throw new Error("--redis-url needs a Redis --adapter, not memory");
  return out;
}

// The ack is the LAST argument: `emitWithAck("whoami")` with no payload passes it first.
function ackOf(args) {
  const last = args[args.length - 1];
  return typeof last === "function" ? last : null;
}

function attachHandlers(io, nodeId) {
  io.on("connection", (socket) => {
    socket.on("echo", (...args) => {
      const ack = ackOf(args);
      if (ack) ack(args.length > 1 ? args[0] : null);
    });
    socket.on("join", (...args) => {
      const ack = ackOf(args);
      const room = args[0];
      if (typeof room !== "string") return ack && ack(false);
      socket.join(room);
      if (ack) ack(true);
    });
    socket.on("leave", (...args) => {
      const ack = ackOf(args);
      const room = args[0];
      if (typeof room !== "string") return ack && ack(false);
      socket.leave(room);
      if (ack) ack(true);
    });
    socket.on("broadcast", (...args) => {
      const ack = ackOf(args);
      const payload = args[0];
      // The payload goes out untouched: the client measures latency from its own "sent" field.
      if (!payload || typeof payload !== "object" || typeof payload.room !== "string") return ack && ack(false);
      io.to(payload.room).emit("broadcast", payload);
      if (ack) ack(true);
    });
    socket.on("whoami", (...args) => {
      const ack = ackOf(args);
      if (ack) ack(nodeId);
    });
  });
}

// engine.io writes refused upgrades (e.g. an unknown sid) straight to the socket, bypassing
// every header hook; inject the header into that raw status block so refusals stay attributable.
function stampRawUpgradeAnswers(httpServer, nodeId) {
  httpServer.prependListener("upgrade", (_req, socket) => {
    const write = socket.write;
    let first = true;
    socket.write = function (chunk, ...rest) {
      if (first) {
        first = false;
        if (typeof chunk === "string" && chunk.startsWith("HTTP/1.1 ") && !/\r\nx-served-by:/i.test(chunk)) {
          const eol = chunk.indexOf("\r\n");
          chunk = chunk.slice(0, eol + 2) + `${HEADER}: ${nodeId}\r\n` + chunk.slice(eol + 2);
        }
      }
      return write.call(this, chunk, ...rest);
    };
  });
}

// Event-loop lag, p99 over the last second: perf_hooks samples the loop every 10 ms; each second
// the p99 is kept and the histogram reset. The histogram records the whole interval between two
// samples, so the resolution is taken off: the gauge is how late the loop was, as in app.py.
function startLagMonitor() {
  const h = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  h.enable();
  const state = { p99ms: 0 };
  setInterval(() => {
    const p99 = h.count > 0 ? h.percentile(99) / 1e6 : LAG_RESOLUTION_MS;
    state.p99ms = Math.max(0, p99 - LAG_RESOLUTION_MS);
    h.reset();
  }, 1000).unref();
  return state;
}

function openFds() {
  try {
    return fs.readdirSync("/proc/self/fd").length;
  } catch (_e) {
    return NaN;
  }
}

// Connected Socket.IO sessions over every namespace (as app.py counts them): a load on
// --namespace /chat is counted too, not only the main namespace's.
function connectedClients(io) {
  let n = 0;
  for (const nsp of io._nsps.values()) n += nsp.sockets.size;
  return n;
}

// GET /metrics, Prometheus text, on the node's own port: the two sioscale gauges plus the
// process metrics under prom-client's default names (no new dependency for five lines).
function metricsText(io, lag) {
  const cpu = process.cpuUsage();
  const lines = [
    "# HELP sioscale_clients connected Socket.IO clients (this node's own count)",
    "# TYPE sioscale_clients gauge",
    `sioscale_clients ${connectedClients(io)}`,
    "# HELP sioscale_event_loop_lag_ms event-loop lag, p99 over the last second, ms",
    "# TYPE sioscale_event_loop_lag_ms gauge",
    `sioscale_event_loop_lag_ms ${lag.p99ms}`,
    "# HELP nodejs_eventloop_lag_p99_seconds event-loop lag, p99 over the last second",
    "# TYPE nodejs_eventloop_lag_p99_seconds gauge",
    `nodejs_eventloop_lag_p99_seconds ${lag.p99ms / 1000}`,
    "# HELP process_cpu_seconds_total user and system CPU time",
    "# TYPE process_cpu_seconds_total counter",
    `process_cpu_seconds_total ${(cpu.user + cpu.system) / 1e6}`,
    "# HELP process_resident_memory_bytes resident memory",
    "# TYPE process_resident_memory_bytes gauge",
    `process_resident_memory_bytes ${process.memoryUsage.rss()}`,
    "# HELP process_open_fds open file descriptors",
    "# TYPE process_open_fds gauge",
    `process_open_fds ${openFds()}`,
  ];
  return lines.join("\n") + "\n";
}

// Connect a Redis client within 3 s or exit 3: the client retries forever (so a Redis restart
// later is survived), but a node that cannot broadcast at start must not look healthy.
async function connectRedis(args, clients) {
  for (const [name, c] of clients) {
    // A lost Redis must not crash the node (the redis client reconnects by itself).
    c.on("error", (e) => console.error(`${args.id} redis ${name}: ${e.message}`));
  }
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error("no answer within 3 s")), 3000);
  });
  try {
    await Promise.race([Promise.all(clients.map(([, c]) => c.connect())), timeout]);
  } catch (e) {
    console.error(`node ${args.id}: cannot reach Redis at ${args.redisUrl}: ${e.message}`);
    process.exit(3);
  } finally {
    clearTimeout(timer);
  }
}

// The adapter factory of --adapter: pub/sub and sharded take a publisher and a subscriber, the
// Streams adapter one client (it duplicates its own readers).
async function redisAdapter(args) {
  const { createClient } = require("redis");
  const pub = createClient({ url: args.redisUrl });
  if (args.adapter === "redis-streams") {
    await connectRedis(args, [["streams", pub]]);
    return require("@socket.io/redis-streams-adapter").createAdapter(pub);
  }
  const sub = pub.duplicate();
  await connectRedis(args, [["pub", pub], ["sub", sub]]);
  const { createAdapter, createShardedAdapter } = require("@socket.io/redis-adapter");
  return args.adapter === "redis-sharded" ? createShardedAdapter(pub, sub) : createAdapter(pub, sub);
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.http2 && !args.certfile) throw new Error("--http2 needs --certfile and --keyfile (h2 is offered by ALPN)");
  const tlsFiles = args.certfile ? { cert: fs.readFileSync(args.certfile), key: fs.readFileSync(args.keyfile) } : null;
  const httpServer = args.http2 ? http2.createSecureServer({ ...tlsFiles, allowHTTP1: true })
    : tlsFiles ? https.createServer(tlsFiles) : http.createServer();
  // Registered before socket.io attaches: engine.io hands it every request off its own path.
  let io = null;
  const lag = startLagMonitor();
  httpServer.on("request", (req, res) => {
    if (req.url === "/metrics" && (req.method === "GET" || req.method === "HEAD") && io) {
      const body = metricsText(io, lag);
      res.writeHead(200, { "content-type": "text/plain; version=0.0.4; charset=utf-8",
        "content-length": Buffer.byteLength(body) });
      res.end(req.method === "HEAD" ? undefined : body);
    } else {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found");
    }
  });
  io = new Server(httpServer, {
    cors: { origin: true, credentials: true },
    pingInterval: Math.round(1000 * (args.pingInterval > 0 ? args.pingInterval : 25)),
    pingTimeout: Math.round(1000 * (args.pingTimeout > 0 ? args.pingTimeout : 20)),
    ...(args.recovery ? { connectionStateRecovery: RECOVERY } : {}),
  });
  // Polling answers and the WebSocket 101 (socket.io's own hooks) ...
  io.engine.on("initial_headers", (headers) => { headers[HEADER] = args.id; });
  io.engine.on("headers", (headers) => { headers[HEADER] = args.id; });
  // ... and every other HTTP answer, errors included: runs before engine.io's request handler.
  httpServer.prependListener("request", (_req, res) => res.setHeader(HEADER, args.id));
  stampRawUpgradeAnswers(httpServer, args.id);
  attachHandlers(io, args.id);

  if (args.adapter !== "memory") io.adapter(await redisAdapter(args));

  httpServer.on("error", (e) => {
    console.error(`node ${args.id}: ${e.code || ""} ${e.message}`);
    process.exit(e.code === "EADDRINUSE" ? 4 : 1);
  });
  httpServer.listen(args.port, args.host);

  const shutdown = () => {
    io.close();
    setTimeout(() => process.exit(0), 500).unref();
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

main().catch((e) => {
  console.error(`node: ${e.stack || e}`);
  process.exit(1);
});
