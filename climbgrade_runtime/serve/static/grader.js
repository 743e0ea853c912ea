// grader.js: climbgrade's grader for web pages and apps. An ES module, no build step, no framework.
//
// It loads the model and its sidecar into onnxruntime-web (the wasm backend on one thread, so a page
// needs no cross-origin-isolation headers) and answers routes as `cg-infer --format json` does: the
// same route shapes in (`frames` or `holds`), the same answers and one-line errors out. The graph does
// the grading and says which routes it cannot grade (`problems`); this module only parses a route,
// spells it in Aurora ids, and words a problem from the sidecar as cg-infer does. docs/web.md documents it.

const ORT_MODULE = new URL("./ort/ort.wasm.min.mjs", import.meta.url);
const FRAME = /p(\d{1,9})r(\d{1,9})/g;
const LABEL_KEYS = ["id", "uuid", "name"];
const ROUTE_KEYS = new Set(["board", "layout_id", "angle", "frames", "holds", ...LABEL_KEYS]);
const MAX_FRAMES_CHARS = 100000;
const BAD_ID = -1; // what an id the model cannot know is sent as: the graph flags it (0 would pad)
const ONLY_HOLD_WARNING = "a route's only hold cannot be left out: no effects";
const UNSEEN_HOLDS = "never appeared in the training data";

/** The graph's `problems` bits (docs/model-format.md). */
export const PROBLEM_BITS = Object.freeze({
  unknown_layout: 1, placement: 2, role: 4, angle: 8, repeated: 16, no_holds: 32, too_many_holds: 64,
});

/** A route this grader cannot grade: its message is cg-infer's for the same route. */
export class RouteError extends Error {}

/**
 * Loads a grader. Options (all optional):
 * - `model`: URL of the .onnx file, or its bytes (ArrayBuffer / Uint8Array). Default: the shipped model
 *   beside this module, `model/climbgrade.onnx`.
 * - `sidecar`: URL of its sidecar, or the parsed object. Default: the model's URL + ".json".
 * - `ort`: an onnxruntime-web module already imported. Default: `ort/ort.wasm.min.mjs` beside this module.
 */
export async function loadGrader(options = {}) {
  const model = options.model ?? new URL("./model/climbgrade.onnx", import.meta.url).href;
  if (typeof model !== "string" && options.sidecar === undefined) {
    throw new Error("loadGrader: a model given as bytes needs its sidecar (options.sidecar)");
  }
  const ort = options.ort ?? await import(ORT_MODULE.href);
  ort.env.wasm.numThreads = 1;
  const sidecar = typeof options.sidecar === "object" ? options.sidecar : await fetchJSON(options.sidecar ?? `${model}.json`);
  if (sidecar.format !== "climbgrade-sidecar" || sidecar.format_version !== 2) {
    throw new Error(`the sidecar is not a climbgrade model format 2 sidecar (format_version ${sidecar.format_version}): re-export the model`);
  }
  const bytes = typeof model === "string" ? new Uint8Array(await fetchBytes(model)) : new Uint8Array(model);
  const session = await ort.InferenceSession.create(bytes, {executionProviders: ["wasm"], graphOptimizationLevel: "all"});
  return new Grader(ort, session, sidecar);
}

async function fetchJSON(url) {
  return JSON.parse(new TextDecoder().decode(await fetchBytes(url)));
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

/** One layout of the sidecar, with what grading and wording need worked out once. */
class Layout {
  constructor(data, index, vocab) {
    this.index = index;
    this.board = data.board;
    this.layout_id = data.layout_id;
    this.name = data.name;
    this.angles = data.angles;
    this.where = `${data.board} layout ${data.layout_id}`;
    this.placements = new Map(Object.entries(data.placements).map(([pid, xy]) => [Number(pid), xy]));
    this.mirrors = new Map(Object.entries(data.mirrors).map(([pid, m]) => [Number(pid), m]));
    this.roles = new Map(Object.entries(data.roles).map(([rid, name]) => [Number(rid), name]).sort((a, b) => a[0] - b[0]));
    // Role name -> the id frames spell it with: the lowest id of each name, unless the layout's own product has one.
    this.roleIds = new Map();
    for (const [rid, name] of [...this.roles].reverse()) this.roleIds.set(name, rid);
    for (const [name, rid] of Object.entries(data.own_roles ?? {})) if (this.roles.get(rid) === name) this.roleIds.set(name, rid);
    this.roleNames = [...new Set(this.roles.values())];
    const prefix = `${data.board}/${data.layout_id}/p`;
    this.known = new Set(vocab.filter((t) => t.startsWith(prefix)).map((t) => t.slice(prefix.length - 1)));
  }
}

class Grader {
  constructor(ort, session, sidecar) {
    this.ort = ort;
    this.session = session;
    this.sidecar = sidecar;
    this.outputs = sidecar.model.outputs.map((o) => o.name);
    this.interval = this.outputs.includes("low");
    const vocab = sidecar.tokenizer.vocab;
    this.perRole = sidecar.tokenizer.hold_tokens !== "placement";
    this.maxHolds = sidecar.tokenizer.max_len - 3;
    this.layouts = sidecar.layouts.map((data, i) => new Layout(data, i, vocab));
    this.byKey = new Map(this.layouts.map((l) => [`${l.board}/${l.layout_id}`, l]));
    this.grades = sidecar.grades;
    this.queue = Promise.resolve(); // onnxruntime-web runs one session call at a time: calls wait their turn
  }

  /** The layout of (board, layout_id), or undefined. */
  layout(board, layoutId) {
    return this.byKey.get(`${board}/${layoutId}`);
  }

  /** A route or a list of routes, answered as cg-infer --format json does (an invalid route: `{index, error}`). */
  async grade(routes) {
    const many = Array.isArray(routes);
    const list = many ? routes : [routes];
    const read = list.map((route, index) => this.#read(route, index));
    const good = read.filter((r) => !r.error);
    const values = good.length ? await this.#run(good.map((r) => r.ids)) : [];
    const answers = read.map((r) => r.error ? failure(r) : null);
    good.forEach((r, i) => {
      answers[r.index] = values[i].problems ? failure({...r, error: this.#problem(r, values[i].problems)}) : this.#answer(r, values[i]);
    });
    return many ? answers : answers[0];
  }

  /** The route at each of `angles` (default: every angle of its board), in one run: its answer plus `angles`. */
  sweep(route, angles) {
    return this.insight(route, {angles: angles ?? "all"});
  }

  /** The route whole and with each hold left out, in one run: its answer plus `holds` (each one's effect) and `crux`. */
  explain(route) {
    return this.insight(route, {explain: true});
  }

  /** The route's left-right mirror, graded (`mirror`: null when its board or a hold has none), in its answer. */
  mirror(route) {
    return this.insight(route, {mirror: true});
  }

  /**
   * cg-infer's `--angles`, `--explain` and `--mirror` for one route, in one run of the model: `angles`
   * "all" or a list of angles, `explain` and `mirror` true or false. The kiosk's one call per tap.
   */
  async insight(route, {angles = null, explain = false, mirror = false} = {}) {
    const r = this.#read(route, 0);
    if (r.error) return failure(r);
    if (r.layout === undefined) return this.grade(route); // the graph refuses it; grade words why
    const layout = r.layout;
    const rows = [r.ids];
    let wanted = [];
    if (angles !== null) {
      wanted = [...new Set(angles === "all" ? layout.angles : angles)];
      const bad = wanted.find((a) => !layout.angles.includes(a));
      if (bad !== undefined) return failure({...r, error: angleError(layout, bad)});
      for (const a of wanted) if (a !== r.angle) rows.push({...r.ids, angle: a});
    }
    const holds = canonical(layout, r.holds);
    const without = explain && holds.length > 1 ? holds.map((_, i) => holds.filter((__, j) => j !== i)) : [];
    for (const rest of without) rows.push(this.#ids(layout, r.angle, rest.map(([pid, role]) => [pid, layout.roleIds.get(role)])));
    const mirrored = mirror && holds.every(([pid]) => layout.mirrors.has(pid)) ? r.holds.map(([pid, role]) => [layout.mirrors.get(pid), role]) : null;
    if (mirrored) rows.push(this.#ids(layout, r.angle, mirrored.map(([pid, role]) => [pid, layout.roleIds.get(role)])));
    const values = await this.#run(rows);
    if (values[0].problems) return failure({...r, error: this.#problem(r, values[0].problems)});
    const answer = this.#answer(r, values[0]);
    const own = [...answer.warnings]; // the route's own warnings, before those of its extras
    let next = 1;
    if (angles !== null) {
      const at = new Map([[r.angle, values[0]]]);
      for (const a of wanted) if (a !== r.angle) at.set(a, values[next++]);
      answer.angles = wanted.map((a) => ({angle: a, ...this.#estimate(at.get(a))}));
    }
    if (explain) {
      const ownRoles = roleWarnings(layout, r.holds);
      if (holds.length === 1) answer.warnings.push(ONLY_HOLD_WARNING);
      const effects = holds.map(([pid, role], i) => {
        if (!without.length) return {placement_id: pid, role, effect: null};
        const effect = values[next + i].difficulty - values[0].difficulty;
        for (const w of roleWarnings(layout, without[i])) if (!ownRoles.includes(w)) answer.warnings.push(`without p${pid}: ${w}`);
        return {placement_id: pid, role, effect};
      });
      next += without.length;
      let crux = null;
      for (const e of effects) if (e.effect !== null && e.effect > 0 && (crux === null || e.effect > crux.effect)) crux = e;
      answer.holds = effects;
      answer.crux = crux === null ? null : crux.placement_id;
    }
    if (mirror) {
      if (mirrored) {
        const v = values[next];
        answer.mirror = {...this.#estimate(v), frames: framesOf(layout, canonical(layout, mirrored), r.given)};
        const notes = [...roleWarnings(layout, mirrored), ...this.#unseen(layout, mirrored)];
        for (const w of notes) if (!own.includes(w)) answer.warnings.push(`mirror: ${w}`);
      } else {
        answer.mirror = null;
        answer.warnings.push(noMirrorReason(layout, holds));
      }
    }
    return answer;
  }

  /** Grade names of a difficulty: the listed grade nearest to it (the table's ends beyond it). */
  gradeOf(difficulty) {
    const lowest = this.grades[0].difficulty;
    const rounded = Math.min(Math.max(Math.floor(difficulty + 0.5), lowest), this.grades[this.grades.length - 1].difficulty);
    return this.grades[rounded - lowest];
  }

  #estimate(v) {
    const g = this.gradeOf(v.difficulty);
    return {difficulty: v.difficulty, ...(this.interval ? {low: v.low, high: v.high} : {}), font: g.font, v_grade: g.v};
  }

  #answer(r, v) {
    const {difficulty, font, v_grade, ...interval} = this.#estimate(v);
    const holds = r.layout ? r.holds : [];
    const warnings = [...r.warnings, ...roleWarnings(r.layout, holds), ...this.#unseen(r.layout, holds)];
    return {index: r.index, ...r.labels, board: r.board, layout_id: r.layout_id, angle: r.angle, difficulty, ...interval, font, v_grade, warnings};
  }

  /** The warning naming holds the model reads as unknown (never in its training data), if any. */
  #unseen(layout, holds) {
    const unknown = canonical(layout, holds)
      .filter(([pid, role]) => !layout.known.has(this.perRole ? `p${pid}/${role}` : `p${pid}`))
      .map(([pid, role]) => `p${pid}` + (this.perRole ? ` as ${role}` : ""));
    return unknown.length ? [`hold(s) ${unknown.join(", ")} ${UNSEEN_HOLDS}; graded as unknown holds`] : [];
  }

  /** A route as parsed and spelled in ids: {index, labels, board, layout_id, angle, given, layout, holds, ids, warnings} or {index, labels, error}. */
  #read(route, index) {
    const labels = routeLabels(route);
    let parsed;
    try {
      parsed = parseRoute(route);
    } catch (err) {
      if (err instanceof RouteError) return {index, labels, error: err.message};
      throw err;
    }
    const extra = Object.keys(route).filter((k) => !ROUTE_KEYS.has(k)).map((k) => shown(k)).sort();
    const warnings = extra.length ? [`ignored unknown field(s) ${extra.join(", ")}`] : [];
    const layout = this.layout(parsed.board, parsed.layout_id);
    // Role names become the layout's ids; a name it lacks and an id no model knows are sent as BAD_ID.
    const pairs = parsed.holds.map(([pid, role]) => [pid, layout === undefined ? BAD_ID : typeof role === "number" ? role : layout.roleIds.get(role) ?? BAD_ID]);
    const ids = this.#ids(layout, parsed.angle, pairs);
    const holds = layout === undefined ? [] : parsed.holds.map(([pid, role]) => [pid, typeof role === "number" ? layout.roles.get(role) : role]);
    return {index, labels, ...parsed, given: parsed.holds, layout, holds, ids, warnings};
  }

  #ids(layout, angle, pairs) {
    const id = (n) => (Number.isSafeInteger(n) && n > 0 && n < 2 ** 31 ? n : BAD_ID);
    return {
      layout: layout === undefined ? BAD_ID : layout.index,
      angle: Number.isSafeInteger(angle) && Math.abs(angle) < 2 ** 31 ? angle : BAD_ID,
      placements: pairs.map(([pid]) => id(pid)),
      roles: pairs.map(([, rid]) => id(rid)),
    };
  }

  /** cg-infer's message for a route the graph flagged: the first problem, in cg-infer's order, worded from the sidecar. */
  #problem(r, problems) {
    const found = findProblem(this, r);
    if (found) return found;
    const names = Object.entries(PROBLEM_BITS).filter(([, bit]) => problems & bit).map(([name]) => name.replaceAll("_", " "));
    return `the model refuses a route its sidecar accepts (${names.join(", ")}): the pair does not match; re-export both with cg-export`;
  }

  /** One run of the model on `rows` (each {layout, angle, placements, roles}); per row its outputs as numbers. */
  #run(rows) {
    const task = this.queue.then(() => this.#runNow(rows));
    this.queue = task.catch(() => {});
    return task;
  }

  async #runNow(rows) {
    const {Tensor} = this.ort;
    const width = Math.max(1, ...rows.map((r) => r.placements.length));
    const placements = new BigInt64Array(rows.length * width);
    const roles = new BigInt64Array(rows.length * width);
    rows.forEach((r, i) => r.placements.forEach((pid, j) => {
      placements[i * width + j] = BigInt(pid);
      roles[i * width + j] = BigInt(r.roles[j]);
    }));
    const column = (key) => new Tensor("int64", BigInt64Array.from(rows, (r) => BigInt(r[key])), [rows.length]);
    const out = await this.session.run({
      layout: column("layout"),
      angle: column("angle"),
      placement_id: new Tensor("int64", placements, [rows.length, width]),
      role_id: new Tensor("int64", roles, [rows.length, width]),
    });
    return rows.map((_, i) => Object.fromEntries(this.outputs.map((name) => [name, Number(out[name].data[i])])));
  }
}

// ---- cg-infer's reading of a route (climbgrade_runtime.routes and .tokenizer), message for message ----

function failure(r) {
  return {index: r.index, ...r.labels, error: r.error};
}

function routeLabels(route) {
  if (!isObject(route)) return {};
  const out = {};
  for (const k of LABEL_KEYS) {
    const v = route[k];
    if (k in route && (typeof v === "string" || typeof v === "number")) out[k] = v;
  }
  return out;
}

/** {board, layout_id, angle, holds: [[placement, role name or id]]}; RouteError with cg-infer's words. */
export function parseRoute(obj) {
  if (!isObject(obj)) {
    throw new RouteError(`a route must be a JSON object with board, layout_id, angle and frames or holds, got ${kind(obj)}`);
  }
  for (const key of ["board", "layout_id", "angle"]) if (!(key in obj)) throw new RouteError(`route is missing '${key}'`);
  const board = obj.board;
  if (typeof board !== "string" || board === "") throw new RouteError(`'board' must be a board name such as 'kilter', got ${kind(board)}`);
  const layout_id = integer(obj.layout_id, "layout_id");
  const angle = integer(obj.angle, "angle");
  if (("frames" in obj) === ("holds" in obj)) {
    throw new RouteError("route must give exactly one of 'frames' (e.g. 'p1145r12p1200r13') or 'holds'");
  }
  const holds = "frames" in obj ? parseFrames(obj.frames) : parseHolds(obj.holds);
  return {board, layout_id, angle, holds};
}

/** "p1145r12p1200r13" -> [[1145, 12], [1200, 13]]; RouteError for anything else. */
export function parseFrames(frames) {
  if (typeof frames !== "string") throw new RouteError(`'frames' must be a string like 'p1145r12p1200r13', got ${kind(frames)}`);
  if (frames.length > MAX_FRAMES_CHARS) {
    throw new RouteError(`'frames' is ${frames.length} characters long; no route needs more than ${MAX_FRAMES_CHARS}`);
  }
  const pairs = [];
  let end = 0;
  for (const m of frames.matchAll(FRAME)) {
    if (m.index !== end) break;
    pairs.push([Number(m[1]), Number(m[2])]);
    end = m.index + m[0].length;
  }
  if (pairs.length === 0 || end !== frames.length) {
    throw new RouteError(`'frames' ${shown(frames)} does not parse: expected p<placement>r<role> repeated`);
  }
  return pairs;
}

function parseHolds(holds) {
  if (!Array.isArray(holds)) throw new RouteError(`'holds' must be a list of {"placement_id": N, "role": "start"}, got ${kind(holds)}`);
  return holds.map((hold, i) => {
    if (!isObject(hold) || !("placement_id" in hold) || !("role" in hold)) {
      throw new RouteError(`holds[${i}] must be an object with 'placement_id' and 'role'`);
    }
    const extra = Object.keys(hold).filter((k) => k !== "placement_id" && k !== "role");
    if (extra.length) throw new RouteError(`holds[${i}] has unknown field(s) ${extra.map((k) => shown(k)).sort().join(", ")}`);
    const placement = integer(hold.placement_id, `holds[${i}].placement_id`);
    const role = hold.role;
    if ((typeof role === "string" && role !== "") || Number.isInteger(role)) return [placement, role];
    throw new RouteError(`holds[${i}].role must be a role name such as 'start' or an Aurora role id, got ${kind(role)}`);
  });
}

function integer(value, name) {
  if (typeof value !== "number") throw new RouteError(`'${name}' must be a whole number, got ${kind(value)}`);
  if (!Number.isInteger(value)) throw new RouteError(`'${name}' must be a whole number, got ${value}`);
  return value;
}

/** The first problem of a route in cg-infer's order (layout, angle, no holds, too many, then hold by hold), or null. */
function findProblem(grader, r) {
  const layout = r.layout;
  if (layout === undefined) {
    const boards = [...new Set(grader.layouts.map((l) => l.board))].sort();
    if (!boards.includes(r.board)) return `unknown board ${shown(r.board)}: this model knows ${boards.join(", ")}`;
    const known = grader.layouts.filter((l) => l.board === r.board).map((l) => l.layout_id).sort((a, b) => a - b);
    return `board ${r.board} has no layout ${shown(r.layout_id)} in this model (layouts: ${known.join(", ")})`;
  }
  if (!layout.angles.includes(r.angle)) return angleError(layout, r.angle);
  if (r.given.length === 0) return "route has no holds";
  if (r.given.length > grader.maxHolds) return `route has ${r.given.length} holds; this model takes at most ${grader.maxHolds}`;
  const seen = new Set();
  for (const [pid, role] of r.given) {
    if (!layout.placements.has(pid)) return `placement ${shown(pid)} is not on ${layout.where}`;
    if (seen.has(pid)) return `placement ${pid} is listed twice`;
    seen.add(pid);
    const roles = layout.roleNames.join(", ");
    if (typeof role === "number" && !layout.roles.has(role)) {
      return `role id ${shown(role)} of placement ${pid} is not a role of ${layout.where} (roles: ${roles})`;
    }
    if (typeof role === "string" && !layout.roleIds.has(role)) {
      return `role ${shown(role)} of placement ${pid} is not a role of ${layout.where} (roles: ${roles})`;
    }
  }
  return null;
}

function angleError(layout, angle) {
  return `angle ${shown(angle)} is not an angle of ${layout.where} (angles: ${layout.angles.join(", ")})`;
}

/** Holds bottom to top, then left to right (then placement id): the order a person reads them in. */
function canonical(layout, holds) {
  const at = (pid) => layout.placements.get(pid) ?? [Infinity, Infinity];
  return [...holds].sort((a, b) => at(a[0])[1] - at(b[0])[1] || at(a[0])[0] - at(b[0])[0] || a[0] - b[0]);
}

function roleWarnings(layout, holds) {
  if (layout === undefined) return [];
  const have = new Set(holds.map(([, role]) => role));
  return ["start", "finish"].filter((r) => layout.roleIds.has(r) && !have.has(r)).map((r) => `route has no ${r} hold`);
}

/** The mirror as frames, each role in the id the user's route spelled it with (else the layout's). */
function framesOf(layout, holds, given) {
  const ids = new Map(layout.roleIds);
  for (const [, role] of given) if (typeof role === "number" && layout.roles.has(role)) ids.set(layout.roles.get(role), role);
  return holds.map(([pid, role]) => `p${pid}r${ids.get(role)}`).join("");
}

function noMirrorReason(layout, holds) {
  if (layout.mirrors.size === 0) return `no mirror graded: ${layout.where} has no mirrored holes`;
  const missing = holds.filter(([pid]) => !layout.mirrors.has(pid)).map(([pid]) => `p${pid}`).join(", ");
  return `no mirror graded: hold(s) ${missing} have no mirror on ${layout.where}`;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** Python's type name and repr of a value, as cg-infer's messages quote it. */
function kind(value) {
  if (value === null || value === undefined) return "null";
  if (typeof value === "boolean") return "bool";
  if (typeof value === "string") return `str ${shown(value)}`;
  if (typeof value === "number") return `${Number.isInteger(value) ? "int" : "float"} ${shown(value)}`;
  return Array.isArray(value) ? "list" : "dict";
}

/** A value as cg-infer quotes it: Python's repr, cut to 60 characters. */
function shown(value, limit = 60) {
  const text = typeof value === "string" ? pyRepr(value) : String(value);
  return text.length <= limit ? text : `${text.slice(0, limit)}...`;
}

function pyRepr(text) {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === "\\" || ch === quote) out += `\\${ch}`;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (code < 0x20 || code === 0x7f) out += `\\x${code.toString(16).padStart(2, "0")}`;
    else out += ch;
  }
  return out + quote;
}
