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

t.test("CORS_ALLOWED_ORIGINS: off by default, a comma-separated list of origins, anything else named", async (t) => {
  t.same(loadConfig({}).cors, { allowedOrigins: [] });
  t.same(loadConfig({ CORS_ALLOWED_ORIGINS: "https://app.example.test, http://localhost:3000" }).cors.allowedOrigins, ["https://app.example.test", "http://localhost:3000"]);
  for (const bad of ["*", "https://app.example.test/ui"]) {
    t.throws(() => loadConfig({ CORS_ALLOWED_ORIGINS: bad }), { message: /^CORS_ALLOWED_ORIGINS .*is not an origin/ }, `"${bad}" is refused, naming the variable`);
  }
});
