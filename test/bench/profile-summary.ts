// Summarises a V8 .cpuprofile (node --cpu-prof; BENCH_PROFILE=dir npm run bench):
// self time by function and by package, and inclusive time of chosen frames.
//
//   npx tsx test/bench/profile-summary.ts file.cpuprofile [top=40] [frame-name-regex]

import { readFileSync } from "node:fs";

interface Node {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount: number;
  children?: number[];
}
interface Profile {
  nodes: Node[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const [file, topArg, pattern] = process.argv.slice(2);
if (!file) {
  process.stderr.write("usage: profile-summary.ts file.cpuprofile [top] [frame-regex]\n");
  process.exit(2);
}
const top = Number(topArg ?? 40);
const prof = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(prof.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

// Self time per node from samples and time deltas (µs).
const self = new Map<number, number>();
prof.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (prof.timeDeltas[i] ?? 0)));
// Percentages are of busy time: idle samples are left out.
const idleIds = new Set(prof.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((n) => n.id));
for (const id of idleIds) self.delete(id);
const total = [...self.values()].reduce((a, b) => a + b, 0);

function pkgOf(url: string): string {
  if (!url) return "(native/vm)";
  if (url.startsWith("node:")) return url.replace(/^node:internal\/([^/]+).*/, "node:$1").replace(/^node:([^/]+).*/, "node:$1");
  const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (m) return m[1];
  const s = /\/work\/[^/]+\/(.*)$/.exec(url);
  return s ? s[1].split("/").slice(0, 2).join("/") : url;
}

const fn = new Map<string, number>();
const pkg = new Map<string, number>();
for (const [id, t] of self) {
  const n = byId.get(id)!;
  const f = n.callFrame;
  const key = `${f.functionName || "(anonymous)"}  ${f.url.replace(/^.*node_modules\//, "").replace(/^file:\/\/\/work\/[^/]+\//, "")}:${f.lineNumber + 1}`;
  fn.set(key, (fn.get(key) ?? 0) + t);
  const p = pkgOf(f.url);
  pkg.set(p, (pkg.get(p) ?? 0) + t);
}

const pct = (t: number) => ((100 * t) / total).toFixed(1).padStart(5) + "%";
const show = (title: string, m: Map<string, number>, k: number) => {
  process.stdout.write(`\n${title}\n`);
  for (const [name, t] of [...m].sort((a, b) => b[1] - a[1]).slice(0, k)) process.stdout.write(`${pct(t)}  ${name}\n`);
};
process.stdout.write(`${file}: ${(total / 1e6).toFixed(2)} s busy (idle left out)\n`);
show("self time by package", pkg, 25);
show("self time by function", fn, top);

if (pattern) {
  // Inclusive time of frames matching the pattern (not double counting nested matches).
  const re = new RegExp(pattern);
  const incl = new Map<string, number>();
  for (const [id, t] of self) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const f = byId.get(cur)!.callFrame;
      const key = `${f.functionName || "(anonymous)"} ${pkgOf(f.url)}`;
      if (re.test(key) && !seen.has(key)) {
        seen.add(key);
        incl.set(key, (incl.get(key) ?? 0) + t);
      }
    }
  }
  show(`inclusive time of frames matching /${pattern}/`, incl, top);
}
