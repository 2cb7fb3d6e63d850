import { ScalarType, getOption, hasOption, type DescField, type DescMessage, type DescMethod, type DescService, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { http } from "../../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../../gen/google/api/http_pb.js";

// The REST surface, derived from google.api.http annotations at start-up
// (https://google.aip.dev/127): path templates, body mapping, and query
// parameters mapped onto request fields. Pure: no I/O.

type Segment = { literal: string } | { field: string; multi: boolean };

export interface Route {
  httpMethod: string;
  method: DescMethod;
  segments: Segment[];
  verb: string | undefined;
  // "" = no body, "*" = the whole request, otherwise a top-level request field.
  body: string;
  template: string;
}

export function parseTemplate(template: string): { segments: Segment[]; verb: string | undefined } {
  if (!template.startsWith("/")) throw new Error(`path template must start with "/": ${template}`);
  let path = template.slice(1);
  let verb: string | undefined;
  const lastBrace = path.lastIndexOf("}");
  const colon = path.indexOf(":", lastBrace + 1);
  if (colon >= 0) {
    verb = path.slice(colon + 1);
    path = path.slice(0, colon);
  }
  const segments: Segment[] = [];
  for (const part of path.split("/")) {
    const m = /^\{([a-z_][a-z0-9_.]*)(?:=(\*\*?))?\}$/i.exec(part);
    if (m) segments.push({ field: m[1], multi: m[2] === "**" });
    else if (/[{}*]/.test(part)) throw new Error(`unsupported path template segment "${part}" in ${template}`);
    else segments.push({ literal: part });
  }
  return { segments, verb };
}

function rulesOf(rule: HttpRule): HttpRule[] {
  return [rule, ...rule.additionalBindings];
}

export function routesOf(services: readonly DescService[]): Route[] {
  const routes: Route[] = [];
  for (const service of services) {
    for (const method of service.methods) {
      if (!hasOption(method, http)) continue;
      for (const rule of rulesOf(getOption(method, http))) {
        const { case: kind, value } = rule.pattern;
        if (kind === undefined) continue;
        const httpMethod = kind === "custom" ? value.kind.toUpperCase() : kind.toUpperCase();
        const template = kind === "custom" ? value.path : value;
        routes.push({ httpMethod, method, body: rule.body, template, ...parseTemplate(template) });
      }
    }
  }
  return routes;
}

/** Path variables of the first route whose template matches, by field path. */
export function matchPath(route: Route, pathSegments: string[], verb: string | undefined): Record<string, string> | undefined {
  if (route.verb !== verb) return undefined;
  const vars: Record<string, string> = {};
  let i = 0;
  for (const seg of route.segments) {
    if ("literal" in seg) {
      if (pathSegments[i] !== seg.literal) return undefined;
      i++;
    } else if (seg.multi) {
      vars[seg.field] = pathSegments.slice(i).join("/");
      i = pathSegments.length;
    } else {
      if (pathSegments[i] === undefined || pathSegments[i] === "") return undefined;
      vars[seg.field] = pathSegments[i];
      i++;
    }
  }
  return i === pathSegments.length ? vars : undefined;
}

/** Splits "/videos/abc:complete" into decoded segments and the custom verb. */
export function splitPath(pathname: string): { segments: string[]; verb: string | undefined } {
  let path = pathname.replace(/^\/+/, "");
  let verb: string | undefined;
  const slash = path.lastIndexOf("/");
  const colon = path.indexOf(":", slash + 1);
  if (colon >= 0) {
    verb = path.slice(colon + 1);
    path = path.slice(0, colon);
  }
  // decodeURIComponent throws on malformed escapes; the caller reports a 400.
  return { segments: path.split("/").map(decodeURIComponent), verb };
}

export class RequestMappingError extends Error {
  /** The request field at fault, as a proto field path, when there is one. */
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super(message);
  }
}

function fieldByName(message: DescMessage, name: string): DescField | undefined {
  return message.fields.find((f) => f.name === name || f.jsonName === name);
}

/**
 * Sets a (dotted) field path in a proto3-JSON request object. Values stay
 * strings where proto3 JSON accepts strings (numbers, enums, Timestamp,
 * FieldMask); booleans are converted. Repeated fields accumulate.
 */
export function setField(message: DescMessage, target: JsonObject, path: string, raw: string): void {
  const names = path.split(".");
  let desc = message;
  let obj = target;
  for (let i = 0; i < names.length; i++) {
    const field = fieldByName(desc, names[i]);
    if (!field) throw new RequestMappingError(`unknown field "${path}"`, path);
    const last = i === names.length - 1;
    if (!last) {
      if (field.fieldKind !== "message") throw new RequestMappingError(`"${path}" does not name a field`);
      const child = obj[field.jsonName];
      obj = (typeof child === "object" && child !== null && !Array.isArray(child) ? child : (obj[field.jsonName] = {})) as JsonObject;
      desc = field.message;
      continue;
    }
    if (field.fieldKind === "map") throw new RequestMappingError(`map field "${path}" cannot be set from a query parameter`);
    if (field.fieldKind === "message" && !field.message.typeName.startsWith("google.protobuf.")) {
      throw new RequestMappingError(`message field "${path}" cannot be set from a query parameter`);
    }
    const isBool = (field.fieldKind === "scalar" || field.fieldKind === "list") && field.scalar === ScalarType.BOOL;
    const value: JsonValue = isBool ? boolValue(raw) : raw;
    if (field.fieldKind === "list") {
      const list = obj[field.jsonName];
      obj[field.jsonName] = Array.isArray(list) ? [...list, value] : [value];
    } else {
      obj[field.jsonName] = value;
    }
  }
}

function boolValue(raw: string): JsonValue {
  if (raw === "true" || raw === "1") return true;
  if (raw === "false" || raw === "0") return false;
  return raw;
}

/**
 * Builds the proto3-JSON request of a REST call: the body (whole or one
 * field), then query parameters, then path variables, which win.
 */
export function requestJson(route: Route, pathVars: Record<string, string>, query: URLSearchParams, body: JsonValue | undefined): JsonObject {
  const input = route.method.input;
  let request: JsonObject = {};
  if (route.body === "*") {
    if (body !== undefined) {
      if (typeof body !== "object" || body === null || Array.isArray(body)) throw new RequestMappingError("the request body must be a JSON object");
      request = { ...body };
    }
  } else if (route.body !== "") {
    const field = fieldByName(input, route.body);
    if (!field) throw new Error(`body field "${route.body}" is not in ${input.typeName}`);
    if (body !== undefined) {
      // Checked here: a path variable inside the body field (video.id) would
      // otherwise replace a body that is not an object with {}.
      if (field.fieldKind === "message" && body !== null && (typeof body !== "object" || Array.isArray(body))) {
        throw new RequestMappingError(`the request body must be a JSON object (${field.message.typeName})`, field.name);
      }
      request[field.jsonName] = body;
    }
  }
  const bodyField = route.body === "" || route.body === "*" ? undefined : fieldByName(input, route.body);
  for (const [key, value] of query) {
    const top = fieldByName(input, key.split(".")[0]);
    if (route.body === "*" || (top && top === bodyField)) {
      throw new RequestMappingError(`query parameter "${key}" is not allowed: the field is taken from the body`);
    }
    if (key in pathVars) throw new RequestMappingError(`query parameter "${key}" is not allowed: the field is taken from the path`);
    setField(input, request, key, value);
  }
  for (const [path, value] of Object.entries(pathVars)) {
    setPathField(input, request, path, value);
  }
  return request;
}

// Path variables replace whatever the body said for the same field.
function setPathField(message: DescMessage, target: JsonObject, path: string, value: string): void {
  const names = path.split(".");
  let desc = message;
  let obj = target;
  for (let i = 0; i < names.length - 1; i++) {
    const field = fieldByName(desc, names[i])!;
    const child = obj[field.jsonName];
    if (typeof child !== "object" || child === null || Array.isArray(child)) {
      obj[field.jsonName] = {};
    }
    obj = obj[field.jsonName] as JsonObject;
    desc = field.message!;
  }
  const leaf = fieldByName(desc, names[names.length - 1])!;
  obj[leaf.jsonName] = value;
}

/** Checks at start-up that every template variable names a string field. */
export function checkRoutes(routes: readonly Route[]): void {
  for (const route of routes) {
    for (const seg of route.segments) {
      if (!("field" in seg)) continue;
      let desc: DescMessage | undefined = route.method.input;
      let field: DescField | undefined;
      for (const name of seg.field.split(".")) {
        field = desc && fieldByName(desc, name);
        desc = field?.fieldKind === "message" ? field.message : undefined;
      }
      if (!field || field.fieldKind !== "scalar" || field.scalar !== ScalarType.STRING) {
        throw new Error(`${route.template}: path variable "${seg.field}" must name a string field of ${route.method.input.typeName}`);
      }
    }
  }
}
