import t from "tap";
import { loadConfig } from "../../server/config.js";

// Settings of loadConfig: defaults, durations, refusals that name the variable.

t.test("DB_IDLE_TRANSACTION_TIMEOUT: a duration, 60 s by default", async (t) => {
  t.equal(loadConfig({}).database.idleInTransactionMs, 60_000);
  t.equal(loadConfig({ DB_IDLE_TRANSACTION_TIMEOUT: "2s" }).database.idleInTransactionMs, 2_000);
  t.equal(loadConfig({ DB_IDLE_TRANSACTION_TIMEOUT: "5m" }).database.idleInTransactionMs, 300_000);
  t.equal(loadConfig({ DB_IDLE_TRANSACTION_TIMEOUT: "1500" }).database.idleInTransactionMs, 1_500, "a bare number is milliseconds");
  for (const bad of ["0s", "soon", "-1s", "1.5s", "60"]) {
    t.throws(() => loadConfig({ DB_IDLE_TRANSACTION_TIMEOUT: bad }), { message: /DB_IDLE_TRANSACTION_TIMEOUT/ }, `"${bad}" is refused, naming the variable${bad === "60" ? " (60 ms: under a second)" : ""}`);
  }
});

t.test("connection settings: per-process bounds and idle timeouts that outlast a gateway's", async (t) => {
  const c = loadConfig({}).connections;
  t.same(c, { max: 1000, maxStreams: 1000, maxHealthWatches: 100, idleTimeoutMs: 75_000, pingIntervalMs: 30_000 });
  t.ok(c.idleTimeoutMs > 60_000, "idle connections outlast nginx's upstream keepalive_timeout (60s)");
  t.ok(c.pingIntervalMs < 60_000, "PINGs come more often than nginx's grpc_read_timeout (60s)");
  const set = loadConfig({ MAX_CONNECTIONS: "50", MAX_CONCURRENT_STREAMS: "200", MAX_HEALTH_WATCHES: "5", IDLE_TIMEOUT: "2m", HTTP2_PING_INTERVAL: "10s" }).connections;
  t.same(set, { max: 50, maxStreams: 200, maxHealthWatches: 5, idleTimeoutMs: 120_000, pingIntervalMs: 10_000 });
  for (const [name, bad] of [["MAX_CONNECTIONS", "0"], ["MAX_CONCURRENT_STREAMS", "many"], ["MAX_HEALTH_WATCHES", "-1"], ["IDLE_TIMEOUT", "500ms"], ["HTTP2_PING_INTERVAL", "0s"]]) {
    t.throws(() => loadConfig({ [name]: bad }), { message: new RegExp(`^${name} `) }, `${name}="${bad}" is refused, naming the variable`);
  }
});

t.test("TRUSTED_PROXIES: addresses and CIDRs; unset trusts nobody", async (t) => {
  t.equal(loadConfig({}).trustedProxies, undefined);
  const list = loadConfig({ TRUSTED_PROXIES: " 10.0.0.0/8 , 192.168.1.7, fd00::/8 " }).trustedProxies;
  t.ok(list?.check("10.20.30.40") && list.check("192.168.1.7") && list.check("fd00::1", "ipv6"));
  t.notOk(list?.check("192.168.1.8"));
  for (const bad of ["nginx", "10.0.0.0/40", "10.0.0.1/8/1", "*"]) {
    t.throws(() => loadConfig({ TRUSTED_PROXIES: bad }), { message: /^TRUSTED_PROXIES .*"/ }, `"${bad}" is refused, naming the variable`);
  }
});

t.test("CORS_ALLOWED_ORIGINS: off by default, a comma-separated list of origins, anything else named", async (t) => {
  t.same(loadConfig({}).cors, { allowedOrigins: [] });
  t.same(loadConfig({ CORS_ALLOWED_ORIGINS: "https://app.example.test, http://localhost:3000" }).cors.allowedOrigins, ["https://app.example.test", "http://localhost:3000"]);
  for (const bad of ["*", "https://app.example.test/ui"]) {
    t.throws(() => loadConfig({ CORS_ALLOWED_ORIGINS: bad }), { message: /^CORS_ALLOWED_ORIGINS .*is not an origin/ }, `"${bad}" is refused, naming the variable`);
  }
});
