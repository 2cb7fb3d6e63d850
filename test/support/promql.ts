// Just enough PromQL reading to check dashboards and alert rules against the
// metrics the service exports: the metric names an expression selects and the
// label names it matches on or groups by. Not a parser: it assumes the
// expressions are well-formed.

const KEYWORDS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset", "inf", "nan"]);

export interface Selection {
  metrics: string[];
  labels: string[];
}

export function selection(expr: string): Selection {
  const labels = new Set<string>();
  let rest = expr
    // Grafana's variables ($job, ${job}, $__rate_interval) and string literals.
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""')
    .replace(/\$\{?\w+\}?/g, "5m");
  // Label matchers inside {…}.
  rest = rest.replace(/\{([^}]*)\}/g, (_m, body: string) => {
    for (const m of body.matchAll(/([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)/g)) labels.add(m[1]);
    return " ";
  });
  // Grouping and matching clauses: by (a, b), on (), group_left (c)…
  rest = rest.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_m, _kw, body: string) => {
    for (const l of body.split(",").map((s) => s.trim()).filter(Boolean)) labels.add(l);
    return " ";
  });
  rest = rest.replace(/\[[^\]]*\]/g, " ");
  const metrics = new Set<string>();
  for (const m of rest.matchAll(/([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    if (m[2] || KEYWORDS.has(m[1].toLowerCase())) continue; // a function call or a keyword
    if (/^\d/.test(m[1]) || /^e\d*$/.test(m[1])) continue;
    metrics.add(m[1]);
  }
  return { metrics: [...metrics], labels: [...labels] };
}

/** Label names of a Grafana `label_values(metric, label)` variable query. */
export function labelValuesQuery(query: string): Selection | undefined {
  const m = /label_values\(\s*([a-zA-Z_:][\w:]*)\s*,\s*([a-zA-Z_]\w*)\s*\)/.exec(query);
  return m ? { metrics: [m[1]], labels: [m[2]] } : undefined;
}
