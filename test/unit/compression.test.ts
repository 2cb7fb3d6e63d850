import t from "tap";
import { negotiateEncoding } from "../../server/transport/compression.js";

// REST response compression: which coding an Accept-Encoding header gets (RFC 9110 §12.5.3).

t.test("Accept-Encoding negotiation", async (t) => {
  const name = (accept: string | undefined) => negotiateEncoding(accept)?.name ?? "identity";
  t.equal(name(undefined), "identity", "no header");
  t.equal(name(""), "identity");
  t.equal(name("gzip"), "gzip");
  t.equal(name("GZIP"), "gzip", "case-insensitive");
  t.equal(name("gzip, deflate, br"), "gzip", "curl --compressed");
  t.equal(name("br"), "identity", "brotli is not offered");
  t.equal(name("br;q=1.0, gzip;q=0.8"), "gzip", "the best coding the server has");
  t.equal(name("gzip;q=0"), "identity", "q=0 refuses");
  t.equal(name("gzip;q=0, *"), "identity", "an explicit refusal is not undone by *");
  t.equal(name("*"), "gzip", "* takes any");
  t.equal(name("identity"), "identity");
  t.equal(name("gzip; q=0.001"), "gzip");
  t.equal(name("gzip;q=abc"), "identity", "an unreadable q is not a yes");
});
