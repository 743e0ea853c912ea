// The climbgrade kiosk page: tap holds on the board, see the grade. An ES module, no build step.
// Every grade, sweep and hold effect is computed here, on the device, by grader.js; the page draws the
// board itself from the sidecar's geometry. A server is asked only for this site's files and, when
// cg-serve runs with --db, climb search. The page runs under a strict Content-Security-Policy.

import {loadGrader} from "./grader.js";

const ROLE_CYCLE = ["start", "middle", "finish", "foot"]; // a tap moves a hole one step on; after foot: none
const SVG_NS = "http://www.w3.org/2000/svg";
const TAP_SLOP = 12; // CSS pixels a pointer may move and still count as a tap (more is a scroll)
// The board picture's look: the same as cg-infer --svg draws (climbgrade_runtime/svg.py).
const ROLE_COLOURS = {start: "#00c853", middle: "#00b8d4", hand: "#00b8d4", finish: "#d500f9", foot: "#ff9100"};
const OTHER_ROLE_COLOUR = "#9e9e9e";
const SCALE = 4, MARGIN = 8, TITLE_HEIGHT = 28, DOT_RADIUS = 2, RING_RADIUS = 11, RING_WIDTH = 2.5;
const WIDTH_PER_EFFECT = 2.5, MAX_EFFECT_SHOWN = 3, HIT_RADIUS = 12;
const INSIGHT = {angles: "all", explain: true, mirror: true}; // cg-infer --angles all --explain --mirror
const OFFLINE_WAIT_MS = 10000; // the longest a first visit waits for the offline copy before loading the model itself
const $ = (id) => document.getElementById(id);

const state = {
  grader: null,
  layout: null, // a layout of the grader (its sidecar's geometry)
  board: null, // the drawn board of that layout: {svg, title, rings, labels, point}
  angle: null,
  holds: new Map(), // placement id -> role name, in the order tapped
  history: [], // snapshots for undo: {holds, climb, angle} (loading a climb can change the angle)
  answer: null, // the insight answer for the route on screen (null: none yet, or no holds)
  climb: null, // the community climb loaded from search, until the route is edited
};
// Each change of route takes the next number; an answer for an older number is dropped, so a slow
// answer can never overwrite a newer one.
let seq = 0;
let searchSeq = 0;
let pending = 0;
let searchTimer = 0;

/** Counts work in flight on <body data-state>: "busy" or "idle" (tests and CSS read it). */
function track(promise) {
  pending += 1;
  document.body.dataset.state = "busy";
  const done = () => {
    pending -= 1;
    if (pending === 0) document.body.dataset.state = "idle";
  };
  promise.then(done, done);
  return promise;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").textContent = "";
  $("error").hidden = true;
}

function gradeText(g) {
  return `${g.difficulty.toFixed(1)} · ${g.font} · ${g.v_grade}`;
}

/** A model with an interval answers `low` and `high` (older models do not): "likely 21.3–24.8", else "". */
function rangeText(g) {
  return g && g.low !== undefined && g.high !== undefined ? `likely ${g.low.toFixed(1)}–${g.high.toFixed(1)}` : "";
}

function currentRoute() {
  return {
    board: state.layout.board,
    layout_id: state.layout.layout_id,
    angle: state.angle,
    holds: [...state.holds].map(([pid, role]) => ({placement_id: pid, role})),
  };
}

function framesOf(holds) {
  return [...holds].map(([pid, role]) => `p${pid}r${state.layout.roleIds.get(role)}`).join("");
}

// ---- the board: drawn once per layout from the sidecar's geometry; a route changes only its rings ----

function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function drawBoard(layout) {
  const places = [...layout.placements];
  const xs = places.map(([, [x]]) => x), ys = places.map(([, [, y]]) => y);
  const left = Math.min(...xs) - MARGIN, top = Math.max(...ys) + MARGIN;
  const width = (Math.max(...xs) - Math.min(...xs) + 2 * MARGIN) * SCALE;
  const height = (Math.max(...ys) - Math.min(...ys) + 2 * MARGIN) * SCALE + TITLE_HEIGHT;
  const point = (pid) => {
    const [x, y] = layout.placements.get(pid);
    return [(x - left) * SCALE, (top - y) * SCALE + TITLE_HEIGHT]; // y up on the board, down on screen
  };
  const picture = svg("svg", {viewBox: `0 0 ${width} ${height}`, "font-family": "sans-serif", role: "img"});
  const title = svg("text", {x: width / 2, y: TITLE_HEIGHT * 0.7, fill: "#ffffff", "font-size": 16, "text-anchor": "middle"});
  const holes = svg("g", {class: "holes", fill: "#5a5a5a"});
  const hits = svg("g", {class: "hits", fill: "transparent", "pointer-events": "all"});
  for (const [pid] of places.sort((a, b) => a[0] - b[0])) {
    const [cx, cy] = point(pid);
    holes.append(svg("circle", {cx, cy, r: DOT_RADIUS}));
    hits.append(svg("circle", {cx, cy, r: HIT_RADIUS, "data-placement-id": pid}));
  }
  const rings = svg("g", {class: "route", fill: "none"});
  const labels = svg("g", {class: "effects"});
  picture.append(svg("rect", {width, height, fill: "#1b1b1b"}), title, holes, rings, labels, hits);
  $("board").replaceChildren(picture);
  return {title, rings, labels, point};
}

/** The route's holds as rings in role colours; with `effects` (placement -> effect) each ring's weight and label. */
function drawRoute(holds, effects, title) {
  const {rings, labels, point} = state.board;
  state.board.title.textContent = title;
  const drawn = [], written = [];
  for (const [pid, role] of holds) {
    const [cx, cy] = point(pid);
    const effect = effects ? effects.get(pid) : undefined;
    const stroke = RING_WIDTH + (effect === undefined || effect === null ? 0 : WIDTH_PER_EFFECT * Math.min(Math.abs(effect), MAX_EFFECT_SHOWN));
    const colour = ROLE_COLOURS[role] ?? OTHER_ROLE_COLOUR;
    drawn.push(svg("circle", {cx: cx.toFixed(1), cy: cy.toFixed(1), r: RING_RADIUS, stroke: colour, "stroke-width": stroke.toFixed(2), "data-placement-id": pid, "data-role": role}));
    if (effect !== undefined && effect !== null) {
      const sign = effect >= 0 ? "+" : "";
      written.push(svg("text", {x: (cx + RING_RADIUS + 3).toFixed(1), y: (cy - RING_RADIUS).toFixed(1), "font-size": 10, fill: colour}, `${sign}${effect.toFixed(1)}`));
    }
  }
  rings.replaceChildren(...drawn);
  labels.replaceChildren(...written);
}

function bareTitle() {
  return `${state.layout.name} at ${state.angle}°`;
}

function pictureTitle(answer) {
  return `${answer.font}/${answer.v_grade} · ${answer.difficulty.toFixed(1)} at ${answer.angle}°`;
}

// ---- grading: one grader.insight call per change of route ----

/** Redraws everything for the route in `state`; `known` is its insight answer when the caller already has it. */
function refresh(known) {
  const my = ++seq;
  state.answer = null;
  showRouteText();
  showButtons();
  showCommunity();
  if (state.holds.size === 0) {  // the bare board
    drawRoute([], null, bareTitle());
    showAnswer(null);
    return;
  }
  drawRoute(state.holds, null, state.board.title.textContent); // the tap shows at once; its effects follow
  $("grade").classList.add("stale");
  const answer = known ? Promise.resolve(known) : state.grader.insight(currentRoute(), INSIGHT);
  track(answer.then(
    (a) => {
      if (my !== seq) return;
      if (a.error) {
        showError(a.error);
        return;
      }
      clearError();
      const effects = new Map(a.holds.map((h) => [h.placement_id, h.effect]));
      drawRoute(a.holds.map((h) => [h.placement_id, h.role]), effects, pictureTitle(a));
      showAnswer(a);
    },
    (err) => { if (my === seq) showError(`the model failed: ${err.message}`); },
  ));
}

function showAnswer(answer) {
  state.answer = answer;
  const grade = $("grade");
  grade.classList.remove("stale");
  $("range").textContent = rangeText(answer);
  $("range").hidden = $("range").textContent === "";
  if (answer === null) {
    grade.textContent = "Tap holds to build a route";
    grade.classList.add("empty");
    drawSweep([]);
  } else {
    grade.textContent = gradeText(answer);
    grade.classList.remove("empty");
    drawSweep(answer.angles || []);
  }
  // The route's own warnings ("route has no finish hold"), not the notes of its left-out holds or mirror.
  const notes = answer === null ? [] : (answer.warnings || []).filter((w) => !/^(without p\d+:|no mirror graded|mirror:|a route's only hold)/.test(w));
  $("warnings").textContent = notes.join("; ");
  $("warnings").hidden = notes.length === 0;
  showButtons();
}

function showRouteText() {
  const frames = framesOf(state.holds);
  $("frames").value = frames;
  $("copy").disabled = frames === "";
}

function showButtons() {
  $("undo").disabled = state.history.length === 0;
  $("clear").disabled = state.holds.size === 0;
  const mirror = $("mirror");
  const mirrors = state.layout.mirrors.size > 0;
  mirror.hidden = !mirrors;
  mirror.disabled = !(mirrors && state.answer && state.answer.mirror && state.answer.mirror.frames);
}

function showCommunity() {
  const box = $("community");
  const climb = state.climb;
  box.hidden = climb === null;
  if (climb === null) return;
  const here = climb.angles.find((a) => a.angle === state.angle);
  const name = climb.name || climb.uuid;
  box.textContent = here
    ? `Community (${name}) at ${state.angle}°: ${gradeText(here)} · ${here.ascents} ascents`
    : `Community (${name}): no grade at ${state.angle}° (graded at ${climb.angles.map((a) => `${a.angle}°`).join(", ")})`;
}

function remember() {
  state.history.push({holds: [...state.holds], climb: state.climb, angle: state.angle});
}

function tap(pid) {
  remember();
  const role = state.holds.get(pid);
  const next = role === undefined ? ROLE_CYCLE[0] : ROLE_CYCLE[ROLE_CYCLE.indexOf(role) + 1];
  if (next === undefined) state.holds.delete(pid);
  else state.holds.set(pid, next);
  state.climb = null;
  refresh();
}

/** Loads a frames string (pasted, a mirror, a community climb): graded first, so a bad one changes nothing. */
async function loadFrames(frames, angle = state.angle, climb = null) {
  const text = frames.trim();
  if (text === "") {
    showError("paste a route's frames first, such as p1145r12p1200r13");
    return;
  }
  const my = ++seq;
  const route = {board: state.layout.board, layout_id: state.layout.layout_id, angle, frames: text};
  let answer;
  try {
    answer = await track(state.grader.insight(route, INSIGHT));
  } catch (err) {
    if (my === seq) showError(`the model failed: ${err.message}`);
    return;
  }
  if (my !== seq) return;
  if (answer.error) {
    showError(answer.error);
    return;
  }
  clearError();
  remember();
  state.holds = new Map(answer.holds.map((h) => [h.placement_id, h.role]));  // the grader's reading of the frames
  state.climb = climb;
  setAngle(angle);
  refresh(answer);
}

function setAngle(angle) {
  state.angle = angle;
  $("angle").value = String(angle);
}

function chooseLayout(layout) {
  state.layout = layout;
  const select = $("angle");
  select.replaceChildren(...layout.angles.map((a) => new Option(`${a}°`, String(a))));
  const keep = layout.angles.includes(state.angle) ? state.angle : (layout.angles.includes(40) ? 40 : layout.angles[Math.floor(layout.angles.length / 2)]);
  setAngle(keep);
  state.holds = new Map();
  state.history = [];
  state.climb = null;
  $("results").replaceChildren();
  $("search").value = "";
  state.board = drawBoard(layout);
  refresh();
}

// ---- the sweep chart: difficulty at every angle, the chosen one marked; tap a column to choose it ----

function drawSweep(angles) {
  const box = $("sweep");
  if (angles.length === 0) {
    box.replaceChildren();
    return;
  }
  const W = 360, H = 150, left = 40, right = 10, top = 16, bottom = 24;
  const banded = angles.every((a) => rangeText(a) !== "");  // a model with an interval: its band behind the line
  const lo = Math.min(...angles.map((a) => banded ? a.low : a.difficulty));
  const hi = Math.max(...angles.map((a) => banded ? a.high : a.difficulty));
  const easiest = Math.min(...angles.map((a) => a.difficulty)), hardest = Math.max(...angles.map((a) => a.difficulty));
  const a0 = angles[0].angle, a1 = angles[angles.length - 1].angle;
  const x = (angle) => left + (a1 === a0 ? 0.5 : (angle - a0) / (a1 - a0)) * (W - left - right);
  const y = (d) => top + (hi === lo ? 0.5 : (hi - d) / (hi - lo)) * (H - top - bottom);
  const chart = svg("svg", {viewBox: `0 0 ${W} ${H}`, class: "sweep-chart", role: "img"});
  chart.append(svg("title", {}, "difficulty at every angle"));
  const low = angles.find((a) => a.difficulty === easiest), high = angles.find((a) => a.difficulty === hardest);
  if (banded) {
    const edge = [...angles.map((a) => `${x(a.angle)},${y(a.high)}`), ...[...angles].reverse().map((a) => `${x(a.angle)},${y(a.low)}`)];
    chart.append(svg("polygon", {points: edge.join(" "), class: "band"}));
  }
  chart.append(
    svg("text", {x: left - 4, y: y(hardest) + 4, class: "axis end"}, high.font),
    svg("line", {x1: left, y1: H - bottom, x2: W - right, y2: H - bottom, class: "base"}),
  );
  if (y(easiest) - y(hardest) >= 12) {  // inside a band, a flat line's two labels would overlap: one is enough
    chart.append(svg("text", {x: left - 4, y: y(easiest) + 4, class: "axis end"}, low.font));
  }
  for (const a of angles) {
    if (a.angle % 10 === 0 || angles.length <= 8) chart.append(svg("text", {x: x(a.angle), y: H - 6, class: "axis mid"}, `${a.angle}°`));
  }
  chart.append(svg("polyline", {points: angles.map((a) => `${x(a.angle)},${y(a.difficulty)}`).join(" "), class: "line"}));
  const chosen = angles.find((a) => a.angle === state.angle);
  if (chosen) {
    chart.append(
      svg("line", {x1: x(chosen.angle), y1: top - 6, x2: x(chosen.angle), y2: H - bottom, class: "chosen-line"}),
      svg("text", {x: Math.min(Math.max(x(chosen.angle), left + 40), W - right - 40), y: top - 5, class: "chosen-label mid"},
        `${chosen.angle}°: ${gradeText(chosen)}`),
    );
  }
  const step = angles.length > 1 ? (W - left - right) / (angles.length - 1) : W - left - right;
  for (const a of angles) {
    const mark = a.angle === state.angle ? "pt chosen" : "pt";
    const dot = svg("circle", {cx: x(a.angle), cy: y(a.difficulty), r: a.angle === state.angle ? 6 : 3.5, class: mark, "data-angle": a.angle});
    dot.append(svg("title", {}, `${a.angle}°: ${gradeText(a)}`));
    chart.append(dot);
  }
  for (const a of angles) {
    chart.append(svg("rect", {x: x(a.angle) - step / 2, y: 0, width: step, height: H, class: "pick", "data-angle": a.angle}));
  }
  box.replaceChildren(chart);
}

// ---- search (only with cg-serve --db: the one thing the page asks a server for) ----

async function getJSON(path) {
  let response;
  try {
    response = await fetch(path);
  } catch (err) {
    throw new Error(`the kiosk server cannot be reached (${err.message})`);
  }
  const payload = await response.json().catch(() => null);
  if (!response.ok) throw new Error(payload && payload.error ? payload.error : `${path}: HTTP ${response.status}`);
  return payload;
}

function search(text) {
  const my = ++searchSeq;
  const q = text.trim();
  if (q === "") {
    $("results").replaceChildren();
    return;
  }
  const params = new URLSearchParams({q, board: state.layout.board, layout_id: String(state.layout.layout_id), limit: "20"});
  track(getJSON(`v1/climbs?${params}`).then(
    (answer) => { if (my === searchSeq) showResults(answer.climbs); },
    (err) => { if (my === searchSeq) showError(err.message); },
  ));
}

function showResults(climbs) {
  const items = climbs.map((climb) => {
    const button = document.createElement("button");
    button.type = "button";
    const first = climb.angles[0];
    const community = first ? ` — ${first.font} at ${first.angle}° (${first.ascents} ascents)` : "";
    button.textContent = `${climb.name || climb.uuid}${community}`;
    button.addEventListener("click", () => {
      loadFrames(climb.frames, first ? first.angle : state.angle, climb);
    });
    const li = document.createElement("li");
    li.append(button);
    return li;
  });
  if (items.length === 0) {
    const li = document.createElement("li");
    li.textContent = "no climb matches";
    items.push(li);
  }
  $("results").replaceChildren(...items);
}

// ---- wiring ----

function wire() {
  $("layout").addEventListener("change", (e) => chooseLayout(state.grader.layouts[Number(e.target.selectedIndex)]));
  $("angle").addEventListener("change", (e) => {
    state.angle = Number(e.target.value);
    refresh();
  });
  let down = null;
  const board = $("board");
  board.addEventListener("pointerdown", (e) => {
    const hit = e.target.closest && e.target.closest("[data-placement-id]");
    down = hit ? {pid: Number(hit.dataset.placementId), x: e.clientX, y: e.clientY} : null;
  });
  board.addEventListener("pointerup", (e) => {
    const hit = e.target.closest && e.target.closest("[data-placement-id]");
    const start = down;
    down = null;
    if (!start || !hit) return;
    const moved = Math.hypot(e.clientX - start.x, e.clientY - start.y);
    if (moved <= TAP_SLOP) tap(start.pid);
  });
  board.addEventListener("pointercancel", () => { down = null; });
  $("sweep").addEventListener("click", (e) => {
    const column = e.target.closest && e.target.closest("[data-angle]");
    if (!column) return;
    setAngle(Number(column.dataset.angle));
    refresh();
  });
  $("undo").addEventListener("click", () => {
    const last = state.history.pop();
    if (!last) return;
    state.holds = new Map(last.holds);
    state.climb = last.climb;
    setAngle(last.angle);
    refresh();
  });
  $("clear").addEventListener("click", () => {
    if (state.holds.size === 0) return;
    remember();
    state.holds = new Map();
    state.climb = null;
    refresh();
  });
  $("mirror").addEventListener("click", () => {
    if (state.answer && state.answer.mirror) loadFrames(state.answer.mirror.frames);
  });
  $("copy").addEventListener("click", async () => {
    const input = $("frames");
    try {
      await navigator.clipboard.writeText(input.value);
    } catch {
      input.select(); // no clipboard outside a secure context: leave it selected for the user to copy
      document.execCommand("copy");
    }
    $("copy").textContent = "Copied";
    setTimeout(() => { $("copy").textContent = "Copy"; }, 1500);
  });
  $("load").addEventListener("click", () => loadFrames($("paste").value));
  $("paste").addEventListener("keydown", (e) => {
    if (e.key === "Enter") loadFrames($("paste").value);
  });
  $("search").addEventListener("input", (e) => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => search(e.target.value), 250);
  });
}

/** Registers the service worker and waits (at most OFFLINE_WAIT_MS) until it has the whole site cached and
 * controls this page, so that the model and onnxruntime-web are then read from its copy: downloaded once,
 * and the kiosk works offline from now on. Where a browser has no workers (plain http to another host
 * than this one is not a secure context), the page loads from the network as any page does. */
async function keepOffline() {
  if (!("serviceWorker" in navigator)) return;
  const workers = navigator.serviceWorker;
  const controlled = (async () => {
    await workers.register("sw.js");
    await workers.ready;
    if (!workers.controller) await new Promise((resolve) => workers.addEventListener("controllerchange", resolve, {once: true}));
  })();
  const capped = new Promise((resolve) => setTimeout(resolve, OFFLINE_WAIT_MS));
  try {
    await Promise.race([controlled, capped]);
  } catch (err) {
    console.warn(`no offline copy: ${err.message}`);
  }
}

async function start() {
  await keepOffline();
  let grader, site;
  try {
    site = await getJSON(new URL("kiosk.json", import.meta.url).href);
    grader = await loadGrader({model: new URL(site.model, import.meta.url).href});
  } catch (err) {
    $("grade").textContent = "The model did not load";
    showError(`cannot load the model: ${err.message}`);
    document.body.dataset.state = "idle";
    return;
  }
  state.grader = grader;
  wire();
  $("layout").replaceChildren(...grader.layouts.map((l) => new Option(l.name, `${l.board}/${l.layout_id}`)));
  $("search-box").hidden = !site.search;
  $("search-off").hidden = site.search;
  const kilter = grader.layout("kilter", 1) || grader.layouts[0];
  $("layout").value = `${kilter.board}/${kilter.layout_id}`;
  chooseLayout(kilter);
  document.body.dataset.state = pending === 0 ? "idle" : "busy";
}

start();
