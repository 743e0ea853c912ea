"""Grade routes with nothing but onnxruntime, numpy and json: the model format 2 contract (docs/model-format.md).

python examples/onnxruntime_only.py [routes.json] [model.onnx]
"""

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

routes = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/routes.json").read_text())
model = sys.argv[2] if len(sys.argv) > 2 else "exports/climbgrade.onnx"
sidecar = json.loads(Path(model + ".json").read_text())
layouts = {(layout["board"], layout["layout_id"]): i for i, layout in enumerate(sidecar["layouts"])}
holds = []
for route in routes:
    own = sidecar["layouts"][layouts[route["board"], route["layout_id"]]].get("own_roles", {})
    pairs = re.findall(r"p(\d+)r(\d+)", route["frames"]) if "frames" in route else route["holds"]
    if "holds" in route:  # {"placement_id": 1206, "role": "start" or 12}
        pairs = [(h["placement_id"], own.get(h["role"], h["role"])) for h in pairs]
    holds.append([(int(p), int(r)) for p, r in pairs])
width = max(len(h) for h in holds)
ids = np.zeros((2, len(routes), width), dtype=np.int64)  # placement and role ids; 0 pads
for row, pairs in enumerate(holds):
    ids[:, row, : len(pairs)] = np.array(pairs).T
feeds = {
    "layout": np.array([layouts[r["board"], r["layout_id"]] for r in routes], dtype=np.int64),
    "angle": np.array([r["angle"] for r in routes], dtype=np.int64),
    "placement_id": ids[0],
    "role_id": ids[1],
}
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
for route, *values in zip(routes, *session.run(names, feeds)):
    answer = {name: value.item() for name, value in zip(names, values)}  # problems 0: the graph could grade it
    print(json.dumps({"name": route.get("name"), **answer}))
