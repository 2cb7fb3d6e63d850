import t from "tap";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import { bufCurl } from "../support/buf.js";
import { startTestServer } from "../support/server.js";

// A deadline longer than the server's limit (MAX_REQUEST_MS) is lowered to
// the limit, not refused: clients add headroom to their own deadlines (gRPC
// C-core sends 30100m for 30 s) and `buf curl --timeout 60s` must work. A
// transport rule, so PGlite is enough.

t.test("a deadline above MAX_REQUEST_MS is clamped to it, not refused, over gRPC, Connect and gRPC-Web", async (t) => {
  const s = await startTestServer(t, { database: "pglite", env: { MAX_REQUEST_MS: "1000" } });
  const v = await s.clients.grpc.createVideo({ video: { title: "deadline" } });
  for (const [name, transport] of Object.entries(s.transports)) {
    const got = await createClient(VideoService, transport).getVideo({ id: v.id }, { timeoutMs: 60_000 });
    t.equal(got.id, v.id, `${name}: a 60 s deadline is served`);

    // The server's limit still holds: an idle stream asked to live 60 s ends at ~1 s.
    const started = Date.now();
    let code: Code | undefined;
    try {
      for await (const _ of createClient(EventService, transport).watchEvents({}, { timeoutMs: 60_000 })) void _;
    } catch (e) {
      code = ConnectError.from(e).code;
    }
    const took = Date.now() - started;
    // (WatchEvents ends its stream cleanly when its deadline passes.)
    t.ok(code === undefined || code === Code.DeadlineExceeded, `${name}: the stream ends at the server's deadline (${code === undefined ? "ok" : Code[code]})`);
    t.ok(took >= 900 && took < 10_000, `${name}: after about 1 s (${took} ms)`);
  }
  for (const protocol of ["grpc", "connect", "grpcweb"]) {
    const call = await bufCurl(["--protocol", protocol, "--timeout", "60s", `${s.baseUrl}/video.v1.VideoService/GetVideo`, "-d", JSON.stringify({ id: v.id })]);
    t.equal(call.code, 0, `buf curl --timeout 60s --protocol ${protocol}: ${call.stderr}`);
    t.equal(JSON.parse(call.stdout || "{}").id, v.id, `buf curl --protocol ${protocol}: the video`);
  }
});
