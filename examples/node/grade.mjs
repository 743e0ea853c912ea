// Grade routes from JavaScript with the climbgrade model (model format 2, docs/model-format.md).
//   npm install --ignore-scripts   (onnxruntime-node's install script fetches GPU binaries; the CPU one is in the package)
//   node grade.mjs [routes.json] [model.onnx] [--web]   (--web: onnxruntime-web's wasm backend instead of onnxruntime-node)
import { readFileSync } from "node:fs";

const args = process.argv.slice(2).filter((a) => a !== "--web");
const web = process.argv.includes("--web");
const ort = web ? await import("onnxruntime-web") : await import("onnxruntime-node");
if (web) ort.env.wasm.numThreads = 1;
const routes = JSON.parse(readFileSync(args[0] ?? "../routes.json", "utf8"));
const modelPath = args[1] ?? "../../exports/climbgrade.onnx";
const sidecar = JSON.parse(readFileSync(`${modelPath}.json`, "utf8"));
const layoutIndex = (r) => sidecar.layouts.findIndex((l) => l.board === r.board && l.layout_id === r.layout_id);

// Each route's (placement, role) ids: from its frames string, or its holds (a role name is spelled in the board's own id).
const holds = routes.map((route) => {
  const own = sidecar.layouts[layoutIndex(route)]?.own_roles ?? {};
  if (route.frames) return [...route.frames.matchAll(/p(\d+)r(\d+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
  return route.holds.map((h) => [h.placement_id, typeof h.role === "string" ? own[h.role] ?? 0 : h.role]);
});
const width = Math.max(...holds.map((h) => h.length));
const placements = new BigInt64Array(routes.length * width); // 0 pads
const roles = new BigInt64Array(routes.length * width);
holds.forEach((pairs, row) =>
  pairs.forEach(([p, r], i) => {
    placements[row * width + i] = BigInt(p);
    roles[row * width + i] = BigInt(r);
  }),
);
const column = (values) => new ort.Tensor("int64", BigInt64Array.from(values.map(BigInt)), [values.length]);
const feeds = {
  layout: column(routes.map(layoutIndex)),
  angle: column(routes.map((r) => r.angle)),
  placement_id: new ort.Tensor("int64", placements, [routes.length, width]),
  role_id: new ort.Tensor("int64", roles, [routes.length, width]),
};
const session = await ort.InferenceSession.create(readFileSync(modelPath));
const outputs = await session.run(feeds);
routes.forEach((route, i) => {
  const answer = Object.fromEntries(session.outputNames.map((name) => [name, Number(outputs[name].data[i])]));
  console.log(JSON.stringify({ name: route.name ?? null, ...answer })); // problems 0: the graph could grade it
});
