"""A route drawn on its board as a standalone SVG: one renderer for cg-infer, cg-eval and the kiosk.

The picture needs nothing but the sidecar's geometry and opens in a browser with no network: no
external fonts, scripts, stylesheets or links. Every placement of the layout is a faint dot, the
route's holds are rings in the boards' role colours, and with hold effects (GradePredictor.explain)
each ring's weight shows how much the hold matters, with a small signed label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from xml.sax.saxutils import escape, quoteattr

from .geometry import LayoutGeometry
from .results import Prediction

# The colours the boards' own apps light the holds in. "hand" is the TB2 name of a middle hold.
ROLE_COLOURS = {
    "start": "#00c853",
    "middle": "#00b8d4",
    "hand": "#00b8d4",
    "finish": "#d500f9",
    "foot": "#ff9100",
}
OTHER_ROLE_COLOUR = "#9e9e9e"  # a role the boards' apps do not name (some layouts name roles by colour)

SCALE = 4.0  # pixels per board unit (Aurora holes sit 4-8 units apart)
MARGIN = 8.0  # board units around the outermost holes
TITLE_HEIGHT = 28.0  # pixels above the board for the title
DOT_RADIUS = 2.0  # pixels
RING_RADIUS = 11.0  # pixels: about half the closest spacing of two holes
RING_WIDTH = 2.5  # pixels, a ring without an effect (or an effect of 0)
WIDTH_PER_EFFECT = 2.5  # extra pixels per unit of |effect| (Aurora difficulty points)
MAX_EFFECT_SHOWN = 3.0  # |effect| beyond this draws as this, so one hold cannot swamp the picture
# A finger-sized tap target per hole for the kiosk. Aurora holes sit >= 5.66 board units (22.6 pixels)
# apart, so targets of 12 pixels overlap their closest neighbours by at most ~1.4 pixels.
HIT_RADIUS = 12.0  # pixels


def render_route_svg(
    layout: LayoutGeometry,
    holds: Sequence[tuple[int, str]],
    title: str,
    effects: Mapping[int, float] | None = None,
    interactive: bool = False,
) -> str:
    """The route `holds` ((placement id, role name) pairs) on `layout` as an SVG document.

    `effects` maps placement id -> effect (GradePredictor.explain: difficulty without the hold minus
    with it); a ring's stroke width grows with |effect| and a signed label sits beside it.
    Raises ValueError for a placement that is not on the layout.
    """
    xs = [x for x, _ in layout.placements.values()]
    ys = [y for _, y in layout.placements.values()]
    left, top = min(xs) - MARGIN, max(ys) + MARGIN
    width = (max(xs) - min(xs) + 2 * MARGIN) * SCALE
    height = (max(ys) - min(ys) + 2 * MARGIN) * SCALE + TITLE_HEIGHT

    def point(pid: int) -> tuple[float, float]:
        x, y = layout.placements[pid]
        return (x - left) * SCALE, (top - y) * SCALE + TITLE_HEIGHT  # y up on the board, down on screen

    lines = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width:g} {height:g}" width="{width:g}" '
            f'height="{height:g}" font-family="sans-serif">'
        ),
        f"<title>{escape(title)}</title>",
        f'<rect width="{width:g}" height="{height:g}" fill="#1b1b1b"/>',
        (
            f'<text x="{width / 2:g}" y="{TITLE_HEIGHT * 0.7:g}" fill="#ffffff" font-size="16" '
            f'text-anchor="middle">{escape(title)}</text>'
        ),
        '<g class="holes" fill="#5a5a5a">',
    ]
    for pid in sorted(layout.placements):
        cx, cy = point(pid)
        lines.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{DOT_RADIUS:g}"/>')
    lines.append("</g>")
    lines.append('<g class="route" fill="none">')
    labels = []
    for pid, role in holds:
        if pid not in layout.placements:
            raise ValueError(f"placement {pid} is not on {layout.board} layout {layout.layout_id}")
        cx, cy = point(pid)
        effect = None if effects is None else effects.get(pid)
        stroke = RING_WIDTH + (0.0 if effect is None else WIDTH_PER_EFFECT * min(abs(effect), MAX_EFFECT_SHOWN))
        colour = ROLE_COLOURS.get(role, OTHER_ROLE_COLOUR)
        lines.append(
            f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{RING_RADIUS:g}" stroke="{colour}" stroke-width="{stroke:.2f}" '
            f'data-placement-id="{pid}" data-role={quoteattr(role)}/>'
        )
        if effect is not None:
            labels.append(
                f'<text x="{cx + RING_RADIUS + 3:.1f}" y="{cy - RING_RADIUS:.1f}" font-size="10" '
                f'fill="{colour}">{effect:+.1f}</text>'
            )
    lines.append("</g>")
    lines.extend(labels)
    if interactive:
        lines.append('<g class="hits" fill="transparent" pointer-events="all">')
        for pid in sorted(layout.placements):
            cx, cy = point(pid)
            lines.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{HIT_RADIUS:g}" data-placement-id="{pid}"/>')
        lines.append("</g>")
    lines.append("</svg>")
    return "\n".join(lines) + "\n"


def picture_title(prediction: Prediction, label: str = "") -> str:
    """A route picture's title: `[<label> · ]<font>/<V> · <difficulty> at <angle>°`, the same in every picture."""
    p = prediction
    grade = f"{p.font}/{p.v_grade} · {p.difficulty:.1f} at {p.angle}°"
    return f"{label} · {grade}" if label else grade


def svg_file_name(stem: str, label: str = "") -> str:
    """`<stem>[-<label as a slug>].svg`: a picture's name, safe on any file system, that says which route it is."""
    slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40].strip("-")
    return f"{stem}-{slug}.svg" if slug else f"{stem}.svg"
