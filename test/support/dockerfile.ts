import { execFileSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";

// deploy/Dockerfile replayed without a Docker engine: the build context as
// .dockerignore leaves it, then each stage's WORKDIR, COPY and RUN steps in a
// directory of its own. RUN steps that call deploy/image.sh run for real (with
// the host's node and npm standing in for the base image's); the others, the
// runtime stage's apt-get line, are recorded for the test to check, since they
// install system packages into the base image.

export interface Stage {
  name: string;
  from: string;
  /** The stage's filesystem root on this machine. */
  root: string;
  workdir: string;
  env: Record<string, string>;
  labels: Record<string, string>;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
  /** RUN steps not replayed (system packages). */
  skipped: string[];
}

/** Dockerfile lines with continuations joined and comments dropped. */
export function instructions(text: string): { op: string; args: string }[] {
  const joined = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  return joined.map((l) => {
    const m = /^(\S+)\s+(.*)$/.exec(l)!;
    return { op: m[1].toUpperCase(), args: m[2].trim() };
  });
}

/** KEY=value pairs of ENV and LABEL (values may be double-quoted), with ${ARG} substituted. */
function pairs(args: string, vars: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of args.matchAll(/([\w.-]+)=("(?:[^"\\]|\\.)*"|\S*)/g)) out[m[1]] = subst(m[2].replace(/^"(.*)"$/, "$1"), vars);
  return out;
}

const subst = (s: string, vars: Record<string, string>) => s.replace(/\$\{(\w+)\}|\$(\w+)/g, (_, a, b) => vars[a ?? b] ?? "");

/**
 * The paths of `dir` that .dockerignore lets into the context: each pattern
 * (`*`, a path, a directory with `/`, `!` to re-include) is tried in order
 * and the last one that matches a path or one of its parent directories wins.
 */
export function contextFiles(dir: string, dockerignore: string): string[] {
  const rules = dockerignore.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"))
    .map((l) => ({ include: l.startsWith("!"), pattern: l.replace(/^!/, "").replace(/\/$/, "") }));
  const matches = (p: string, pattern: string) => pattern === "*" || p === pattern || p.startsWith(pattern + "/");
  const kept = (p: string) => rules.reduce((keep, r) => (matches(p, r.pattern) ? r.include : keep), true);
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const p = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) walk(p);
      else if (kept(p)) out.push(p);
    }
  };
  walk("");
  return out;
}

export interface ReplayOptions {
  buildArgs?: Record<string, string>;
  /** Called before each replayed RUN step, in the stage's working directory. */
  beforeRun?: (stage: Stage, dir: string) => void;
}

/** Runs every stage of `dockerfile` with `context` as the build context; stages live under `work`. */
export function replay(dockerfile: string, context: string, work: string, { buildArgs = {}, beforeRun }: ReplayOptions = {}): Stage[] {
  const stages: Stage[] = [];
  const globalArgs: Record<string, string> = {};
  let stage: Stage | undefined;
  let vars: Record<string, string> = {};
  const at = (s: Stage, p: string) => path.join(s.root, path.posix.resolve(s.workdir, p));
  for (const { op, args } of instructions(readFileSync(dockerfile, "utf8"))) {
    if (op === "ARG") {
      const [name, def = ""] = args.split(/=(.*)/s);
      (stage ? vars : globalArgs)[name] = buildArgs[name] ?? globalArgs[name] ?? def;
      continue;
    }
    if (op === "FROM") {
      const m = /^(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      const name = m[2] ?? String(stages.length);
      stage = { name, from: subst(m[1], globalArgs), root: path.join(work, name), workdir: "/", env: {}, labels: {}, skipped: [] };
      mkdirSync(stage.root, { recursive: true });
      stages.push(stage);
      vars = {};
      continue;
    }
    if (!stage) throw new Error(`${op} before FROM`);
    const s = stage;
    const all = { ...vars, ...s.env };
    switch (op) {
      case "WORKDIR":
        s.workdir = path.posix.resolve(s.workdir, subst(args, all));
        mkdirSync(at(s, "."), { recursive: true });
        break;
      case "COPY": {
        const words = args.split(/\s+/);
        const from = words.find((w) => w.startsWith("--from="))?.slice("--from=".length);
        const [dest, ...srcs] = words.filter((w) => !w.startsWith("--")).reverse();
        const source = from ? stages.find((x) => x.name === from) : undefined;
        if (from && !source) throw new Error(`COPY --from=${from}: no such stage`);
        for (const src of srcs.reverse()) {
          const origin = source ? path.join(source.root, src) : path.join(context, src);
          if (!existsSync(origin)) throw new Error(`COPY ${src}: not in the ${source ? `stage ${from}` : "build context"}`);
          // Docker copies a directory's contents; a file into a directory (dest ending in /) keeps its name.
          const target = dest.endsWith("/") && !statSync(origin).isDirectory() ? path.join(at(s, dest), path.basename(src)) : at(s, dest);
          cpSync(origin, target, { recursive: true });
        }
        break;
      }
      case "RUN":
        if (/^sh deploy\/image\.sh \w+$/.test(args)) {
          beforeRun?.(s, at(s, "."));
          // This machine's environment (PATH to this node and npm, the registry's
          // CA and proxy settings), without the test runner's: tap's process
          // tracking adds a loader to NODE_OPTIONS of every spawn, which env drops.
          const host = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(NODE_OPTIONS$|TAP|_TAPJS)/.test(k)));
          execFileSync("env", ["-u", "NODE_OPTIONS", "sh", "-c", args], { cwd: at(s, "."), env: { ...host, ...all }, stdio: ["ignore", "inherit", "inherit"] });
        } else s.skipped.push(args);
        break;
      case "ENV":
        Object.assign(s.env, pairs(args, all));
        break;
      case "LABEL":
        Object.assign(s.labels, pairs(args, all));
        break;
      case "USER":
        s.user = args;
        break;
      case "ENTRYPOINT":
        s.entrypoint = JSON.parse(args) as string[];
        break;
      case "CMD":
        s.cmd = JSON.parse(args) as string[];
        break;
      case "EXPOSE":
        break;
      default:
        throw new Error(`Dockerfile instruction ${op} is not replayed here`);
    }
  }
  return stages;
}
