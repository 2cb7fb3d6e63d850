import { readFileSync } from "node:fs";
import type * as http from "node:http";
import { createConnectRouter, createContextValues } from "@connectrpc/connect";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { Health } from "../../gen/health/v1/health_pb.js";
import { AuditService } from "../../gen/video/v1/audit_service_pb.js";
import { EventService } from "../../gen/video/v1/event_service_pb.js";
import { VideoService } from "../../gen/video/v1/video_service_pb.js";
import auditRoutes from "../audit/audit-service.js";
import { authenticate } from "../auth/authenticate.js";
import { createVerifier } from "../auth/jwt.js";
import type { AppContext } from "../context.js";
import eventRoutes from "../events/event-service.js";
import { OutboxRelay } from "../events/relay.js";
import videoRoutes from "../videos/index.js";
import healthRoutes, { readinessProbe } from "./health.js";
import { observe, publicErrors } from "./interceptors.js";
import { createListener, type NodeRequest, type NodeResponse } from "./listener.js";
import { reflectionRoutes } from "./reflection.js";
import { createRestHandler } from "./rest.js";

// Wires one handler set to every protocol: gRPC, gRPC-Web and Connect through
// the Connect router, REST through the transcoder onto the same router, plus
// the operational endpoints, all behind one listener.

export function createServer(ctx: AppContext) {
  const shutdown = new AbortController();
  const relay = new OutboxRelay(ctx, {
    batchSize: ctx.cfg.events.relayBatchSize,
    pollMs: ctx.cfg.events.relayPollMs,
    retentionMs: ctx.cfg.events.retentionMs,
    format: ctx.cfg.events.format,
  });
  const probe = readinessProbe(ctx);
  const router = createConnectRouter({
    interceptors: [
      observe(ctx.logger, ctx.metrics),
      publicErrors(ctx.logger),
      ...(ctx.cfg.auth.jwt ? [authenticate(createVerifier(ctx.cfg.auth.jwt))] : []),
    ],
    readMaxBytes: ctx.cfg.limits.maxBodyBytes,
    maxTimeoutMs: ctx.cfg.limits.maxRequestMs,
  });
  videoRoutes(ctx)(router);
  eventRoutes(() => ctx.db, relay, shutdown.signal)(router);
  auditRoutes(() => ctx.db)(router);
  healthRoutes(probe, shutdown.signal)(router);
  reflectionRoutes([VideoService, EventService, AuditService, Health])(router);

  const contextValues = () => createContextValues();
  const rest = createRestHandler(router, {
    maxBodyBytes: ctx.cfg.limits.maxBodyBytes,
    contextValues,
    onInternalError: (e) => ctx.logger.error("rest call failed", { error: e instanceof Error ? e.stack : String(e) }),
  });
  const rpc = new Map(router.handlers.map((h) => [h.requestPath, h]));

  async function operational(path: string, res: NodeResponse): Promise<boolean> {
    if (path === "/health") {
      send(res, 200, "application/json", JSON.stringify({ status: "SERVING" }));
    } else if (path === "/health/ready") {
      const r = await probe();
      send(res, r.ready ? 200 : 503, "application/json", JSON.stringify(r.ready ? { status: "SERVING" } : { status: "NOT_SERVING", reason: r.reason }));
    } else if (path === "/metrics") {
      send(res, 200, ctx.metrics.registry.contentType, await ctx.metrics.registry.metrics());
    } else {
      return false;
    }
    return true;
  }

  function handler(req: NodeRequest, res: NodeResponse) {
    const url = req.url ?? "/";
    const q = url.indexOf("?");
    const path = q < 0 ? url : url.slice(0, q);
    const uHandler = rpc.get(path);
    if (uHandler) {
      const uReq = universalRequestFromNodeRequest(req as http.IncomingMessage, res as http.ServerResponse, undefined, contextValues());
      uHandler(uReq)
        .then((uRes) => universalResponseToNodeResponse(uRes, res))
        .catch((e: unknown) => ctx.logger.warn("response not delivered", { procedure: path, error: String(e) }));
      return;
    }
    const contentType = String(req.headers["content-type"] ?? "");
    if (contentType.startsWith("application/grpc")) {
      // An unknown method over gRPC answers in gRPC, not with a REST 404.
      (res as http.ServerResponse).writeHead(200, { "content-type": contentType, "grpc-status": "12", "grpc-message": `unknown method ${path}` });
      res.end();
      return;
    }
    if (req.method === "GET" && path.startsWith("/health") || path === "/metrics") {
      operational(path, res)
        .then((done) => done || rest.handle(req, res))
        .catch((e: unknown) => {
          ctx.logger.error("operational endpoint failed", { path, error: String(e) });
          send(res, 500, "application/json", JSON.stringify({ error: { code: 500, status: "INTERNAL", message: "internal error" } }));
        });
      return;
    }
    rest.handle(req, res);
  }

  const tls = ctx.cfg.tls && { cert: readFileSync(ctx.cfg.tls.certFile), key: readFileSync(ctx.cfg.tls.keyFile) };
  const listener = createListener({
    handler,
    tls,
    onError: (err, where) => ctx.logger.debug("connection error", { where, error: err.message }),
  });

  return {
    listener,
    routes: rest.routes,
    relay,
    async listen(port: number, host: string) {
      const address = await listener.listen(port, host);
      relay.start();
      return address;
    },
    /**
     * Stops accepting, reports not ready, lets in-flight calls finish within
     * graceMs, then lets the relay finish its batch (published and marked, or
     * left pending).
     */
    async close(graceMs: number) {
      ctx.draining = true;
      shutdown.abort();
      await listener.close(graceMs);
      await relay.stop();
    },
  };
}

function send(res: NodeResponse, status: number, contentType: string, body: string) {
  if (res.headersSent) return;
  (res as http.ServerResponse).writeHead(status, { "content-type": contentType, "content-length": Buffer.byteLength(body), "cache-control": "no-store" });
  res.end(body);
}
