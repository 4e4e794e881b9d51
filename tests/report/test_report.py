"""lib.report: rows and best method on a hand-made report, self-contained and escaped HTML, markdown summary."""

from __future__ import annotations

import base64
import copy
import json
import math
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from lib.report.html import render_html
from lib.report.markdown import render_markdown
from lib.report.table import BASE_COLUMNS, best_method, best_methods, columns, table_rows, verdict_text
from tests.report.sample import EVIL, IMAGES, PNG_SIGNATURE, method, sample_report, split


@pytest.fixture
def report() -> dict[str, Any]:
    return sample_report()


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Collector:
    p = Collector()
    p.feed(html)
    p.close()
    return p


# -------------------------------------------------------------------------------------------- rows


def test_best_method_skips_supervised_failed_and_missing_split(report: dict[str, Any]) -> None:
    assert best_method(report) == "ae"  # voxnet has a higher NMI but saw the labels; train-only has no test NMI
    report["scored_split"] = "train"
    assert best_method(report) == "raw"  # tie at 0.99 on train: the first one listed wins
    report["scored_split"] = "test"
    report["methods"][1]["status"] = "failed"
    assert best_method(report) == "raw"
    report["labelled"] = False
    assert best_method(report) is None
    assert best_method({"title": "t", "labelled": True, "methods": []}) is None


def test_table_rows(report: dict[str, Any]) -> None:
    report["methods"][0]["metrics"]["test"]["silhouette"] = math.nan
    rows = table_rows(report)
    assert [r["name"] for r in rows] == ["raw", "ae", "voxnet", "broken", "train-only"]
    cols = columns(report)
    assert cols[:4] == ["name", "method", "supervised", "status"]
    assert cols[-2:] == ["test_accuracy", "reconstruction_iou"]
    assert all([c for c in r if c != "error"] == cols for r in rows)  # plus the error of a failed method
    raw, ae, voxnet, broken, train_only = rows
    assert "error" in broken and "error" not in raw
    assert raw["nmi"] == 0.40 and raw["silhouette"] is None and raw["n_clusters"] == 3
    assert raw["test_accuracy"] is None and ae["reconstruction_iou"] == 0.8 and voxnet["test_accuracy"] == 0.9
    assert voxnet["supervised"] is True and broken["status"] == "failed"
    assert all(broken[c] is None for c in ("nmi", "ari", "acc", "purity", "inertia", "n_clusters"))
    assert train_only["nmi"] is None and train_only["ari"] is None  # the scored split only
    json.dumps(rows, allow_nan=False)

    unlabelled = {"title": "t", "methods": [method("raw", "raw", None, metrics={"test": {"inertia": 7.5}})]}
    (row,) = table_rows(unlabelled)
    assert list(row) == columns(unlabelled) == list(BASE_COLUMNS)  # no method-metric columns
    assert row["inertia"] == 7.5 and row["nmi"] is None and row["train_seconds"] == 12.34567

    # a store that mixes captures (meshes, clouds, grids): every row gets a capture NMI cell
    report["methods"][1]["capture_nmi"] = 0.012
    cols = columns(report)
    assert cols[cols.index("train_seconds") + 1] == "capture_nmi"
    rows = table_rows(report)
    assert rows[1]["capture_nmi"] == 0.012 and rows[0]["capture_nmi"] is None
    # a method that assigns clusters itself (SCAN): its own partition's NMI and ACC beside k-means'
    report["methods"][0]["own"] = {"nmi": 0.7, "acc": 0.8}
    assert columns(report)[-4:-2] == ["own_nmi", "own_acc"]
    rows = table_rows(report)
    assert (rows[0]["own_nmi"], rows[0]["own_acc"], rows[1]["own_nmi"]) == (0.7, 0.8, None)


# -------------------------------------------------------------------------------------------- HTML


def test_render_html_self_contained(report: dict[str, Any]) -> None:
    html = render_html(report, IMAGES)
    assert html.startswith("<!DOCTYPE html>")
    p = parse(html)
    tags = [t for t, _ in p.tags]
    assert "link" not in tags and "iframe" not in tags and "object" not in tags
    scripts = [a for t, a in p.tags if t == "script"]
    assert scripts == [{}]  # the one inline script (sorting, 3D views): nothing loaded from elsewhere
    srcs = [a.get("src") or "" for t, a in p.tags if t == "img"]
    assert len(srcs) == 5  # elbow, loss, raw contingency + tsne, ae strips; the missing pca is not an <img>
    for src in srcs:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :], validate=True)[:8] == PNG_SIGNATURE
    assert all("src" not in a or t == "img" for t, a in p.tags)
    hrefs = [a.get("href") or "" for t, a in p.tags if t == "a"]
    assert "https://prefect.example/runs/1" in hrefs and "s3://bucket/ae/assignments.parquet" in hrefs
    assert all(h.startswith(("#", "https://", "s3://")) for h in hrefs)  # the javascript: URL is not a link
    text = "".join(p.text)
    assert "(image missing)" in text
    assert "voxclust <comparison>" in text


def test_render_html_content(report: dict[str, Any]) -> None:
    html = render_html(report, IMAGES)
    text = "".join(parse(html).text)
    assert EVIL in text  # shown as text ...
    assert EVIL not in html and "&lt;script&gt;alert" in html  # ... because it is escaped
    assert "javascript:alert(1)" in text
    for expected in ("1234.568", "0.610", "12.3 s", "s3://bucket/modelnet10", "reconstruction IoU", "test accuracy"):
        assert expected in text, expected
    assert "ae (NMI 0.610 on the test split)" in text
    assert "raw: 3" in text and "ae: 3" in text and "broken" in text
    assert "–" in text  # missing values
    assert "0: 5" in text and "2: 2" in text  # cluster sizes


def test_render_html_tolerates_missing_parts(report: dict[str, Any]) -> None:
    html = render_html(report, {})  # every image missing
    p = parse(html)
    assert not [t for t, _ in p.tags if t == "img"]
    assert "".join(p.text).count("(image missing)") == 5 + 1

    bad = copy.deepcopy(report)
    bad["labelled"] = False
    bad["methods"][0]["metrics"] = {"test": {"inertia": 5.0, "silhouette": None}}
    bad["methods"][1]["status"] = "failed"
    bad["methods"][1]["error"] = None
    del bad["images"]
    html = render_html(bad, {"raw-tsne.png": b"GIF89a not a png"})
    text = "".join(parse(html).text)
    assert "not a PNG" in text and "no error message" in text and "no labels" in text

    minimal = render_html({"title": "empty", "methods": []}, {})
    assert "empty" in minimal
    parse(minimal)


# -------------------------------------------------------------------------------------------- markdown


def test_render_markdown(report: dict[str, Any]) -> None:
    links = {"HTML report": "s3://bucket/reports/report.html", "ae run (x)": "https://prefect.example/runs/1 (x)"}
    md = render_markdown(report, links)
    lines = md.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| name |"))
    assert lines[header + 1].startswith("|---|")
    table = lines[header + 2 : header + 7]
    assert [line.split("|")[1].strip() for line in table] == [
        "raw",
        "ae",
        "voxnet (supervised)",
        "broken",
        "train-only",
    ]
    assert all(line.count("|") == lines[header].count("|") for line in table)
    assert "| 0.610 |" in table[1] and "failed" in table[3]
    assert "**Best unsupervised method:** ae (NMI 0.610 on the test split)" in md
    assert "Suggested k" in md and "raw: 3" in md
    assert "&lt;script&gt;" in md and "<script>" not in md  # the error, escaped
    assert lines[-2] == "- [HTML report](s3://bucket/reports/report.html)"
    assert lines[-1] == "- [ae run (x)](https://prefect.example/runs/1%20%28x%29)"

    unlabelled = render_markdown({"title": "t", "labelled": False, "methods": []})
    assert "no labels" in unlabelled and "No methods were run." in unlabelled and "Links" not in unlabelled


def test_rounded_rows_show_numbers_as_the_html_does() -> None:
    from lib.report.table import rounded_rows

    rows = rounded_rows([{"name": "dc", "nmi": 0.9463849645616855, "k": 10, "silhouette": None}])
    assert rows == [{"name": "dc", "nmi": 0.946, "k": 10, "silhouette": None}]


def _ranked(*rows: tuple[str, list[float] | None, bool]) -> dict[str, Any]:
    """A labelled report whose rows have these NMIs over seeds (None: no spread, NMI 0.5)."""
    methods = []
    for name, nmis, supervised in rows:
        m: dict[str, Any] = {"name": name, "method": "x", "status": "ok", "supervised": supervised}
        m["metrics"] = {"test": split(nmis[0] if nmis else 0.5)}
        if nmis is not None:
            n = len(nmis)
            m["spread"] = {"seeds": list(range(n)), "nmi": nmis, "ari": [0.1] * n, "acc": [0.5] * n}
            m["spread"] |= {"restart_seeds": [0, 1, 2], "restart_nmi": [nmis[0] - 0.01, nmis[0], nmis[0] + 0.02]}
        methods.append(m)
    return {"labelled": True, "scored_split": "test", "methods": methods}


def test_the_verdict_names_every_method_whose_interval_overlaps_the_best() -> None:
    rep = _ranked(
        ("ae", [0.60, 0.61, 0.62], False),
        ("dc", [0.58, 0.60, 0.61], False),  # overlaps ae's 0.60-0.62
        ("raw", [0.47, 0.48, 0.48], False),  # below
        ("vox", [0.80, 0.81, 0.82], True),  # supervised: a reference, never best
        ("simclr", [0.50, 0.59, 0.63], False),  # lower mean, but its range reaches into ae's
    )
    assert best_method(rep) == "ae"
    assert best_methods(rep) == ["ae", "dc", "simclr"]
    text = verdict_text(rep)
    assert text.startswith("ae, dc and simclr, within noise of each other")
    assert "ae 0.600–0.620 over 3 seeds" in text and "raw" not in text and "vox" not in text
    alone = _ranked(("ae", [0.70, 0.71], False), ("dc", [0.58, 0.61], False))
    assert best_methods(alone) == ["ae"]
    assert "no other method's range overlaps it" in verdict_text(alone) and "over 2 seeds" in verdict_text(alone)
    rows = {r["name"]: r for r in table_rows(rep)}
    assert rows["dc"]["nmi_mean"] == pytest.approx(0.5966667) and rows["dc"]["nmi_min"] == 0.58
    assert rows["dc"]["seeds"] == 3 and rows["ae"]["restart_nmi_max"] == pytest.approx(0.62)
    assert "seeds" in columns(rep) and "nmi_max" in columns(rep)


def test_a_single_seed_verdict_says_it_rests_on_one_run() -> None:
    rep = _ranked(("ae", [0.61], False), ("dc", [0.58], False))
    assert best_methods(rep) == ["ae"]
    text = verdict_text(rep)
    assert "from a single training run per method" in text and "k-means seeds alone give it 0.600–0.630" in text
    assert "seeds" not in columns(rep) and "restart_nmi_min" in columns(rep)  # no seed spread to show
    tied = _ranked(("ae", [0.61], False), ("dc", [0.61], False))
    assert "tied with dc" in verdict_text(tied)
    steady = _ranked(("ae", [0.61], False))
    steady["methods"][0]["spread"]["restart_nmi"] = [0.88, 0.88, 0.8801]  # every k-means seed the same
    assert "every k-means seed gives it 0.880" in verdict_text(steady) and "–" not in verdict_text(steady)
    old = _ranked(("ae", None, False))  # a report written before spreads: its one NMI
    assert best_methods(old) == ["ae"] and "single training run" in verdict_text(old)
    assert "restart_nmi_min" not in columns(old)


# -------------------------------------------------------------------------------------------- for curators


def test_times_have_units() -> None:
    from lib.report.table import duration

    assert [duration(v) for v in (0, 0.04, 12.34, 59.96, 72.4, 3599.6, 3725, None, math.nan, "3")] == [
        "0.0 s",
        "0.0 s",
        "12.3 s",
        "1 min 0 s",
        "1 min 12 s",
        "1 h 0 min",
        "1 h 2 min",
        "–",
        "–",
        "–",
    ]


def _metrics_table(p: Collector) -> list[tuple[str, dict[str, str | None]]]:
    start = next(i for i, (t, a) in enumerate(p.tags) if t == "table" and "metrics" in (a.get("class") or ""))
    end = next(i for i, (t, _) in enumerate(p.tags) if i > start and t == "table")
    return p.tags[start:end]


def test_the_page_explains_marks_links_and_names_what_it_shows() -> None:
    from lib.report.html import DEEPCLUSTER_NOTE
    from lib.report.previews import decode_grid
    from tests.report.sample import rich_report
    from tests.support import shapes

    rep, files = rich_report()
    evil_id = "</script><b>x</b>"  # an item id is only text, in the page and in its grids' JSON
    first_ae = rep["methods"][1]["central_members"][0]["items"][0]
    rep["methods"][1]["central_members"][0]["items"][0] = evil_id
    doc = json.loads(files["ae-previews.json"])
    doc["grids"][evil_id] = doc["grids"].pop(first_ae)
    files["ae-previews.json"] = json.dumps(doc).encode()
    html = render_html(rep, files, report_url="s3://bucket/store/reports/compare-1/")
    p = parse(html)
    text = " ".join(p.text)

    # the glossary explains every column of the table, in plain words; the headers carry it as a tooltip
    glossary = html[html.index('<section id="glossary">') : html.index("</section>", html.index('id="glossary"'))]
    for term in ("NMI", "ARI", "ACC", "PIC NMI", "capture NMI", "test accuracy", "reconstruction IoU", "train time"):
        assert f"<dt>{term}" in glossary, term
    assert "supervised" in glossary and "silhouette" in glossary and "NMI min (k-means seeds)" in glossary
    table = _metrics_table(p)
    heads = [a for t, a in table if t == "th"]
    assert len(heads) == len(columns(rep)) - 1  # "supervised" is a badge in the status cell
    assert all(a.get("title") for a in heads[3:])  # every metric; name, method and status need none
    # the key columns show, the rest are behind "show all columns"
    key = [i for i, a in enumerate(heads) if "extra" not in (a.get("class") or "")]
    assert len(key) <= 11 and any("extra" in (a.get("class") or "") for a in heads)

    # supervised rows carry a badge, not "yes"
    badges = [a.get("class") for t, a in table if t == "span"]
    assert badges.count("badge sup") == 1 and "yes" not in "".join(html[html.index("<tbody>") :].split("</table>")[:1])

    # times with their unit, everywhere
    assert "0.0 s" in text and "1 min 12 s" in text and "12.3 s" in text and "0.000" not in text.split("Metrics")[0]
    assert "Training time 0.0 s" in " ".join(html.replace("</dt><dd>", " ").split("<dt>"))

    # URLs are links, escaped; a file of the report folder relative to the page; javascript: never
    hrefs = [a.get("href") for t, a in p.tags if t == "a"]
    assert "https://prefect.example/runs/1" in hrefs and "file:///data/store/runs/raw-1a2b" in hrefs
    assert "clusters/raw.json" in hrefs and "report.json" in hrefs and "assignments.csv" in hrefs
    assert "s3://bucket/modelnet10" in hrefs and not [h for h in hrefs if h and h.startswith("javascript")]

    # the item ids of the thumbnails, row by row in the thumbnails' order, as text one can copy
    for m in rep["methods"][:2]:
        for c in m["central_members"]:
            assert " ".join(c["items"]) in " ".join(t.strip() for t in p.text if t.strip()), c["items"]
    assert "</script><b>x</b>" not in html and "&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;" in html
    assert len([a for t, a in p.tags if t == "canvas"]) == 2  # one 3D view per method with previews

    # the grids travel in the page: escaped JSON, every shown member's grid exactly
    start = html.index('<script type="application/json" id="voxel-grids">') + len(
        '<script type="application/json" id="voxel-grids">'
    )
    embedded = json.loads(html[start : html.index("</script>", start)])
    assert "</script><b>x</b>" in embedded and "<" not in html[start : html.index("</script>", start)]
    grids, labels = shapes(4, 0, r=32)
    first = int(next(i for i, v in enumerate(labels) if v == 0))
    assert (decode_grid(embedded["raw-box_0000"]) == grids[first]).all()

    # DeepCluster's curves come with how to read them
    assert html.count(DEEPCLUSTER_NOTE.replace("'", "&#39;")) == 2  # under its NMI plot and the loss plot
    plain = copy.deepcopy(rep)
    plain["methods"][3]["method"] = "triplet"
    del plain["images"]["deepcluster_nmi"]
    assert "How to read DeepCluster" not in render_html(plain, files)


def test_previews_round_trip_and_bad_files() -> None:
    from lib.report.previews import decode_grid, encode_grid, previews_file, read_previews
    from tests.support import shapes

    grids, _ = shapes(2, 3, r=32)
    data = previews_file(["a", "b", "a", "c", "d", "e"], grids)
    back = read_previews(data)
    assert list(back) == ["a", "b", "c", "d", "e"]  # an item shown twice is stored once
    assert (decode_grid(back["c"]) == grids[3]).all() and (decode_grid(back["a"]) == grids[0]).all()
    assert len(back["a"]) < 1000  # a 32^3 grid in under a kilobyte
    empty = np.zeros((8, 8, 8), bool)
    assert not decode_grid(encode_grid(empty)).any()
    for bad in (None, b"", b"not json", b"[1, 2]", b'{"grids": 3}', "é".encode("latin-1")):
        assert read_previews(bad) == {}
    assert read_previews(b'{"grids": {"x": "no size", "y": "8:AAAA"}}') == {"y": "8:AAAA"}
    with pytest.raises(ValueError):
        encode_grid(np.zeros((2, 3, 4), bool))
    with pytest.raises(ValueError):
        decode_grid("32:not base64!")
    with pytest.raises(ValueError):
        previews_file(["a"], grids[:2])
    # a page whose previews file is missing or broken lists the item ids, without a 3D view
    from tests.report.sample import rich_report

    rep, files = rich_report()
    files["raw-previews.json"] = b"garbage"
    del files["ae-previews.json"]
    p = parse(render_html(rep, files))
    assert "raw-box_0000" in "".join(p.text) and not [t for t, _ in p.tags if t == "canvas"]
