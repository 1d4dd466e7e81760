"""draw: every format, checked for what a reader or a renderer relies on."""

from __future__ import annotations

import io
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence

import pytest
from PIL import Image, ImageColor

from stageflow.errors import MissingExtra, UsageError
from stageflow.graph import (
    FORMATS,
    STATE_COLOURS,
    UNKNOWN_STATE_COLOUR,
    CycleError,
    DrawFormat,
    draw,
    shape,
)

Graph = Mapping[str, Sequence[str]]
SVG = "{http://www.w3.org/2000/svg}"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A 30-task training pipeline with fan-out, fan-in and skip-level edges.
PIPELINE: dict[str, list[str]] = {
    "ingest_events": [],
    "ingest_users": [],
    "ingest_payments": [],
    "validate_events": ["ingest_events"],
    "validate_users": ["ingest_users"],
    "validate_payments": ["ingest_payments"],
    "join": ["validate_events", "validate_users", "validate_payments"],
    "profile": ["join"],
    "split": ["join"],
    "feat_time": ["split"],
    "feat_text": ["split"],
    "feat_graph": ["split"],
    "feat_agg": ["split", "validate_payments"],
    "assemble": ["feat_time", "feat_text", "feat_graph", "feat_agg"],
    "train_xgb": ["assemble"],
    "train_lr": ["assemble"],
    "train_mlp": ["assemble"],
    "train_rf": ["assemble"],
    "eval_xgb": ["train_xgb"],
    "eval_lr": ["train_lr"],
    "eval_mlp": ["train_mlp"],
    "eval_rf": ["train_rf"],
    "select_model": ["eval_xgb", "eval_lr", "eval_mlp", "eval_rf"],
    "explain": ["select_model"],
    "fairness": ["select_model", "profile"],
    "register": ["select_model", "fairness"],
    "package": ["register"],
    "deploy_staging": ["package"],
    "smoke_test": ["deploy_staging"],
    "deploy_prod": ["smoke_test", "explain"],
}
EDGES = [(u, v) for v, deps in PIPELINE.items() for u in deps]
DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def svg_tree(
    upstream: Graph,
    *,
    labels: Mapping[str, str] | None = None,
    states: Mapping[str, str] | None = None,
    title: str | None = None,
) -> ET.Element:
    return ET.fromstring(draw(upstream, "svg", labels=labels, states=states, title=title))


def rects(root: ET.Element) -> dict[str, ET.Element]:
    """Task id -> its ``<rect>``, read from the enclosing ``<g data-task>``."""
    return {
        group.attrib["data-task"]: group.find(f"{SVG}rect")  # type: ignore[misc]
        for group in root.iter(f"{SVG}g")
        if "data-task" in group.attrib
    }


def box(rect: ET.Element) -> tuple[float, float, float, float]:
    x, y = float(rect.attrib["x"]), float(rect.attrib["y"])
    return x, y, x + float(rect.attrib["width"]), y + float(rect.attrib["height"])


def png_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def pixels(image: Image.Image) -> list[tuple[int, int, int]]:
    """RGB pixels row by row (``getdata`` is deprecated in recent Pillow)."""
    raw = image.tobytes()
    return [(raw[i], raw[i + 1], raw[i + 2]) for i in range(0, len(raw), 3)]


def count_colour(image: Image.Image, colour: str) -> int:
    rgb = ImageColor.getrgb(colour)
    return sum(1 for pixel in pixels(image) if pixel == rgb)


def test_formats() -> None:
    assert FORMATS == ("text", "dot", "mermaid", "svg", "png")


def test_unknown_format_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="unknown drawing format 'gif'"):
        draw(DIAMOND, "gif")  # type: ignore[call-overload]  # proving the runtime check


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_graph_draws(fmt: DrawFormat) -> None:
    assert draw({}, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_output_is_deterministic(fmt: DrawFormat) -> None:
    states = {"join": "success", "train_lr": "failed"}
    first = draw(PIPELINE, fmt, states=states, title="churn")
    assert first == draw(PIPELINE, fmt, states=states, title="churn")


@pytest.mark.parametrize("fmt", FORMATS)
def test_cycle_cannot_be_drawn(fmt: DrawFormat) -> None:
    with pytest.raises(CycleError):
        draw({"a": ["b"], "b": ["a"]}, fmt)


# --- text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("upstream", "labels", "states", "title", "expected"),
    [
        pytest.param({}, None, None, None, "(no tasks)\n", id="empty"),
        pytest.param(
            DIAMOND,
            None,
            None,
            None,
            "level 0: a\n  a\nlevel 1: b, c\n  b <- a\n  c <- a\nlevel 2: d\n  d <- b, c\n",
            id="diamond",
        ),
        pytest.param(
            DIAMOND,
            None,
            {"a": "success", "b": "running", "d": "mystery"},
            "demo",
            "demo\nlevel 0: a\n  a [success]\nlevel 1: b, c\n  b [running] <- a\n  c <- a\n"
            "level 2: d\n  d [mystery] <- b, c\n",
            id="states-and-title",
        ),
        pytest.param(
            {"a": [], "b": ["a"]},
            {"a": "Ingest", "b": "Train\nmodel"},
            None,
            None,
            "level 0: Ingest\n  Ingest\nlevel 1: Train model\n  Train model <- Ingest\n",
            id="labels-one-line",
        ),
    ],
)
def test_text(
    upstream: Graph,
    labels: Mapping[str, str] | None,
    states: Mapping[str, str] | None,
    title: str | None,
    expected: str,
) -> None:
    assert draw(upstream, "text", labels=labels, states=states, title=title) == expected


# --- dot ----------------------------------------------------------------------------


def test_dot_has_every_task_and_edge() -> None:
    dot = draw(PIPELINE, "dot", title="churn")
    assert dot.startswith('digraph "churn" {\n')
    assert dot.rstrip().endswith("}")
    assert "rankdir=LR" in dot
    for task in PIPELINE:
        assert f'  "{task}" [label="{task}"];' in dot
    for u, v in EDGES:
        assert f'  "{u}" -> "{v}";' in dot
    assert dot.count(" -> ") == len(EDGES)


def test_dot_quotes_and_escapes() -> None:
    upstream = {'say "hi"': [], "back\\slash": ['say "hi"'], "node": ["back\\slash"]}
    dot = draw(upstream, "dot", labels={"node": 'a "quoted"\nlabel'})
    assert '"say \\"hi\\"" -> "back\\\\slash";' in dot
    assert '"back\\\\slash" -> "node";' in dot
    assert '"node" [label="a \\"quoted\\"\\nlabel"];' in dot
    # Outside escapes, quotes pair up: every statement line has an even count.
    for line in dot.splitlines():
        assert line.replace('\\"', "").count('"') % 2 == 0, line


def test_dot_fills_by_state() -> None:
    dot = draw(DIAMOND, "dot", states={"a": "success", "b": "weird"})
    assert f'"a" [label="a\\n[success]", fillcolor="{STATE_COLOURS["success"]}"];' in dot
    assert f'"b" [label="b\\n[weird]", fillcolor="{UNKNOWN_STATE_COLOUR}"];' in dot
    assert '"c" [label="c"];' in dot


# --- mermaid ------------------------------------------------------------------------


def test_mermaid_has_every_edge() -> None:
    text = draw(PIPELINE, "mermaid")
    assert text.startswith("flowchart LR\n")
    for task in PIPELINE:
        assert f'  t_{task}["{task}"]' in text
    for u, v in EDGES:
        assert f"  t_{u} --> t_{v}" in text
    assert text.count("-->") == len(EDGES)


def test_mermaid_ids_are_safe_and_labels_escaped() -> None:
    upstream = {"end": [], "a.b": ["end"], "a-b": ["a.b"], "x": ["a-b"], 'q"<&>#': ["x"]}
    text = draw(upstream, "mermaid", title='my "flow"')
    assert text.startswith('---\ntitle: "my \\"flow\\""\n---\nflowchart LR\n')
    nodes = re.findall(r'^  (\S+)\["(.*)"\]$', text, flags=re.MULTILINE)
    names = [name for name, _ in nodes]
    assert len(names) == len(set(names)) == len(upstream)
    assert all(re.fullmatch(r"t_[A-Za-z0-9_]+", name) for name in names)
    assert names[:3] == ["t_end", "t_a_b", "t_a_b_2"]
    assert nodes[-1][1] == "q#quot;#lt;#amp;#gt;#35;"
    edges = re.findall(r"^  (\S+) --> (\S+)$", text, flags=re.MULTILINE)
    assert edges == [
        ("t_end", "t_a_b"),
        ("t_a_b", "t_a_b_2"),
        ("t_a_b_2", "t_x"),
        ("t_x", names[-1]),
    ]


def test_mermaid_classes_by_state() -> None:
    text = draw(DIAMOND, "mermaid", states={"a": "success", "b": "success", "c": "bogus"})
    assert f"classDef state_success fill:{STATE_COLOURS['success']}" in text
    assert "class t_a,t_b state_success" in text
    assert f"classDef state_unknown fill:{UNKNOWN_STATE_COLOUR}" in text
    assert "class t_c state_unknown" in text


# --- svg ----------------------------------------------------------------------------


def test_svg_has_a_box_per_task_and_an_arrow_per_edge() -> None:
    root = svg_tree(PIPELINE, title="churn")
    assert root.tag == f"{SVG}svg"
    assert len(root.findall(f".//{SVG}rect")) == len(PIPELINE)
    paths = root.findall(f".//{SVG}path")
    assert len(paths) == len(EDGES)
    assert all(path.attrib["marker-end"] == "url(#arrow)" for path in paths)
    assert root.find(f".//{SVG}marker[@id='arrow']") is not None
    assert sorted((p.attrib["data-source"], p.attrib["data-target"]) for p in paths) == sorted(
        EDGES
    )
    labels = [text.text for text in root.iter(f"{SVG}text")]
    assert all(task in labels for task in PIPELINE)
    assert "churn" in labels


def test_svg_boxes_fit_labels_and_do_not_overlap() -> None:
    labels = {"join": "join all three validated sources", "package": "pkg"}
    boxes = {task: box(rect) for task, rect in rects(svg_tree(PIPELINE, labels=labels)).items()}
    for task, (x0, _, x1, _) in boxes.items():
        assert x1 - x0 >= len(labels.get(task, task)) * 7.2
    assert boxes["join"][2] - boxes["join"][0] > boxes["package"][2] - boxes["package"][0]
    items = list(boxes.values())
    for i, (ax0, ay0, ax1, ay1) in enumerate(items):
        for bx0, by0, bx1, by1 in items[i + 1 :]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0


def test_svg_arrows_run_from_upstream_to_downstream_box() -> None:
    root = svg_tree(PIPELINE)
    boxes = {task: box(rect) for task, rect in rects(root).items()}
    for path in root.iter(f"{SVG}path"):
        points = [
            (float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", path.attrib["d"])
        ]
        (sx, sy), (ex, ey) = points[0], points[-1]
        source, target = boxes[path.attrib["data-source"]], boxes[path.attrib["data-target"]]
        assert sx == pytest.approx(source[2], abs=0.1)  # leaves the right side
        assert source[1] <= sy <= source[3]
        assert ex == pytest.approx(target[0], abs=0.1)  # enters the left side
        assert target[1] <= ey <= target[3]
        assert ex > sx


def test_svg_orders_rows_to_avoid_a_crossing() -> None:
    # In definition order c would sit above d, and their edges would cross.
    boxes = {
        t: box(r) for t, r in rects(svg_tree({"a": [], "b": [], "c": ["b"], "d": ["a"]})).items()
    }
    assert boxes["a"][1] < boxes["b"][1]
    assert boxes["d"][1] < boxes["c"][1]


def test_svg_routes_long_edges_around_boxes() -> None:
    # ingest -> report skips two columns; its curve must not cross the middle boxes.
    upstream = {"ingest": [], "a": ["ingest"], "b": ["a"], "report": ["b", "ingest"]}
    root = svg_tree(upstream)
    boxes = {task: box(rect) for task, rect in rects(root).items()}
    long = next(
        p
        for p in root.iter(f"{SVG}path")
        if p.attrib["data-target"] == "report" and p.attrib["data-source"] == "ingest"
    )
    points = [
        (float(x), float(y)) for x, y in re.findall(r"(-?[\d.]+),(-?[\d.]+)", long.attrib["d"])
    ]
    for middle in ("a", "b"):
        x0, y0, x1, y1 = boxes[middle]
        level_points = [y for x, y in points if x0 <= x <= x1]
        assert level_points
        assert all(y < y0 or y > y1 for y in level_points)


def test_svg_escapes_labels() -> None:
    upstream = {"a.b-c_d": [], 'x"y': ["a.b-c_d"]}
    labels = {"a.b-c_d": "<script>&'\"", 'x"y': "bad\x01char"}
    text = draw(upstream, "svg", labels=labels, title="<t>", states={'x"y': "</rect>"})
    assert "&lt;script&gt;&amp;&#x27;&quot;" in text
    assert "<script>" not in text
    root = ET.fromstring(text)
    shown = [t.text for t in root.iter(f"{SVG}text")]
    assert "<script>&'\"" in shown
    assert "bad\ufffdchar" in shown
    assert "<t>" in shown
    assert set(rects(root)) == {"a.b-c_d", 'x"y'}


def test_svg_fills_by_state_with_a_legend() -> None:
    states = {"a": "success", "b": "failed", "c": "bogus"}
    root = svg_tree(DIAMOND, states=states)
    fills = {task: rect.attrib["fill"] for task, rect in rects(root).items()}
    assert fills == {
        "a": STATE_COLOURS["success"],
        "b": STATE_COLOURS["failed"],
        "c": UNKNOWN_STATE_COLOUR,
        "d": "#ffffff",
    }
    legend = root.find(f".//{SVG}g[@class='legend']")
    assert legend is not None
    assert [t.text for t in legend.iter(f"{SVG}text")] == ["success", "failed", "bogus"]
    assert [c.attrib["fill"] for c in legend.iter(f"{SVG}circle")] == [
        fills["a"],
        fills["b"],
        fills["c"],
    ]
    assert svg_tree(DIAMOND).find(f".//{SVG}g[@class='legend']") is None


def test_state_colours_cover_design_states() -> None:
    assert list(STATE_COLOURS) == [
        "pending",
        "queued",
        "running",
        "up_for_retry",
        "success",
        "failed",
        "skipped",
        "upstream_failed",
        "cancelled",
    ]
    colours = [*STATE_COLOURS.values(), UNKNOWN_STATE_COLOUR, "#ffffff"]
    assert len(set(colours)) == len(colours)


@pytest.mark.parametrize(
    "upstream",
    [
        pytest.param(
            {f"t{i}": [f"t{j}" for j in range(max(0, i - 3), i)] for i in range(1000)},
            id="1000-band",
        ),
        pytest.param(
            {"hub": [], **{f"t{i}": ["hub", *([f"t{i - 1}"] if i else [])] for i in range(300)}},
            id="hub-with-long-edges",
        ),
    ],
)
def test_svg_large_graphs(upstream: Graph) -> None:
    root = svg_tree(upstream)
    assert len(root.findall(f".//{SVG}rect")) == len(upstream)
    assert len(root.findall(f".//{SVG}path")) == shape(upstream).edges


# --- png ----------------------------------------------------------------------------


def test_png_of_a_30_task_pipeline() -> None:
    data = draw(PIPELINE, "png", title="churn", states={"train_xgb": "success"})
    assert data.startswith(PNG_SIGNATURE)
    image = png_image(data)
    width, height = image.size
    assert 600 <= width <= 6000
    assert 150 <= height <= 3000
    # One success box (plus a legend swatch) is filled with the success colour.
    filled = count_colour(image, STATE_COLOURS["success"])
    assert 1000 <= filled <= 6000


def test_png_fills_each_state() -> None:
    states = {"a": "success", "b": "failed", "c": "running", "d": "bogus"}
    image = png_image(draw(DIAMOND, "png", states=states))
    for state in ("success", "failed", "running"):
        assert count_colour(image, STATE_COLOURS[state]) > 500, state
    assert count_colour(image, UNKNOWN_STATE_COLOUR) > 500
    plain = png_image(draw(DIAMOND, "png"))
    assert count_colour(plain, STATE_COLOURS["success"]) == 0


def test_png_flows_left_to_right() -> None:
    image = png_image(draw({"a": [], "b": ["a"]}, "png", states={"a": "success", "b": "failed"}))
    width, height = image.size
    graph = image.crop((0, 0, width, height - 46))  # above the legend band

    def columns(state: str) -> list[int]:
        rgb = ImageColor.getrgb(STATE_COLOURS[state])
        return [i % width for i, pixel in enumerate(pixels(graph)) if pixel == rgb]

    assert columns("success")
    assert max(columns("success")) < min(columns("failed"))


def test_png_without_pillow_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(MissingExtra, match=r"pip install 'stageflow\[draw\]'"):
        draw(DIAMOND, "png")
