"""Figures for the comparison report: every plotting function returns the bytes of one PNG.

Choices:

* **No pyplot.** Figures are ``matplotlib.figure.Figure`` objects drawn on their own Agg canvas
  (``FigureCanvasAgg``), never registered with pyplot's global figure manager: nothing leaks between calls,
  no GUI backend is ever selected, and figures can be made from worker threads (each call owns its figure).
  Colour maps come from the read-only registry ``matplotlib.colormaps``.
* **Small files.** Figures are a few inches wide, saved at ``DPI`` (90) with ``bbox_inches="tight"`` and then
  re-encoded by Pillow (a matplotlib dependency) as 8-bit palette PNGs without dithering, about 2.5 times
  smaller than matplotlib's RGBA output and indistinguishable for plots; a report with ~50 images stays a few
  MB once base64-embedded in one HTML file.
* **2-D maps** (``map_2d``) are the only computation here, because only the plots use them: scikit-learn PCA,
  or t-SNE (scikit-learn, ``init="pca"``, perplexity ``min(30, (N - 1) / 3)``) after a PCA to ``pca_first``
  dimensions when the features are wider, the usual recipe that makes t-SNE faster and less noisy. Below
  ``TSNE_THREADED_ROWS`` rows t-SNE runs with one OpenMP thread (``threadpoolctl``, a scikit-learn dependency;
  the limit is process-wide while it lasts): scikit-learn otherwise uses every core, which on small inputs only
  adds overhead and on a busy machine turned a 0.2 s t-SNE into 40 s of spin-waiting.
* **Colours** (``scatter_2d``): tab10 up to 10 groups, tab20 up to 20, then a sampled continuous map (turbo)
  without legend; negative values mean "unknown" and are drawn in grey, under the known points. With ``names``
  the colour of value ``v`` is fixed by ``v`` (so class colours agree between plots of the same classes);
  without, by its rank among the values present.
* **Elbow curves** of different methods live on very different scales (raw voxels vs 128-d unit vectors), so
  each curve is divided by its own inertia at the smallest k: all curves start at 1 and show the relative drop.
* **Loss curves** are small multiples, one panel per method, because losses of different methods
  (reconstruction, triplet, cross-entropy) are not comparable on one axis.
* **Voxel thumbnails** (``cluster_strips``): the grids' up axis is the last one (index 2). A thumbnail is a
  depth image seen from the front (looking along +y, axis 1; x to the right, z up) next to one seen from the
  side (looking along -x, axis 0; y to the right, z up), neither mirrored: for every pixel the first occupied
  voxel along the viewing ray, shaded light blue when near and darker when farther; background light grey,
  gaps white. The image row index is flipped so that z points up in the picture. Each cluster is one strip
  (a single image per cluster row, so many clusters stay cheap to draw).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any, Literal

import matplotlib
import numpy as np
import numpy.typing as npt
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image
from threadpoolctl import threadpool_limits

DPI = 90
TSNE_THREADED_ROWS = 2000  # t-SNE on fewer rows runs single-threaded unless asked otherwise
UNKNOWN_COLOR = (0.62, 0.62, 0.62, 1.0)
View = Literal["front", "side", "top"]

# Thumbnail colours (RGB in [0, 1]).
_NEAR_RGB = np.array([0.55, 0.75, 1.0])  # nearest occupied voxel; farther ones are scaled down towards black
_FAR_SHADE = 0.3  # brightness factor of the farthest possible voxel
_BACKGROUND_RGB = np.array([0.95, 0.95, 0.95])
_GAP_RGB = np.array([1.0, 1.0, 1.0])


# -------------------------------------------------------------------------------------------- helpers


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, dpi: int = DPI) -> bytes:
    """Render ``fig`` and store it as an 8-bit palette PNG (plots have few colours: ~2.5x smaller than RGBA)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", metadata={"Software": None})
    buf.seek(0)
    with Image.open(buf) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _message(text: str, title: str | None = None) -> bytes:
    """A small figure that only says ``text`` (used when there is nothing to plot)."""
    fig = _figure(5, 1.6)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=11, color="0.3", transform=ax.transAxes)
    if title:
        ax.set_title(title)
    return _png(fig)


Color = tuple[float, float, float, float]


def _palette(n: int) -> list[Color]:
    """``n`` distinct colours: tab10, tab20, or ``n`` samples of a continuous map."""
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    cmap = matplotlib.colormaps["turbo"]
    return [cmap(0.05 + 0.9 * i / (n - 1)) for i in range(n)]


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


# -------------------------------------------------------------------------------------------- 2-D maps


def map_2d(
    x: npt.ArrayLike,
    method: Literal["pca", "tsne"],
    *,
    seed: int = 0,
    pca_first: int = 50,
    threads: int | None = None,
) -> np.ndarray:
    """(N, 2) float32 coordinates of the rows of ``x`` (N, D) for a scatter plot, by PCA or t-SNE.

    t-SNE: scikit-learn ``TSNE(init="pca", random_state=seed, perplexity=min(30, (N - 1) / 3))`` after a PCA
    to ``pca_first`` dimensions when D is larger. Deterministic for a fixed ``seed``. Rows that are all equal
    map to the origin. Raises ValueError on non-finite values, fewer than 3 rows or an unknown method.

    ``threads``: OpenMP threads for t-SNE's gradient (scikit-learn otherwise uses every core). None means 1
    below ``TSNE_THREADED_ROWS`` rows, where threads only add overhead (and, on a busy machine, spin-waiting
    that made a 36-point t-SNE take 40 s instead of 0.2 s), and all cores above.
    """
    from sklearn.decomposition import PCA

    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"map_2d: expected an (N, D) array, got shape {a.shape}")
    n, d = a.shape
    if n < 3:
        raise ValueError(f"map_2d: needs at least 3 rows, got {n}")
    if d < 1:
        raise ValueError("map_2d: features have no columns")
    if not np.isfinite(a).all():
        raise ValueError("map_2d: features contain NaN or infinite values")
    if method not in ("pca", "tsne"):
        raise ValueError(f"map_2d: unknown method {method!r} (expected 'pca' or 'tsne')")
    if pca_first < 2:
        raise ValueError(f"map_2d: pca_first must be at least 2, got {pca_first}")
    if np.ptp(a, axis=0).max() == 0.0:  # one point repeated: both methods would divide by a zero variance
        return np.zeros((n, 2), np.float32)
    if d == 1:
        a = np.hstack([a, np.zeros((n, 1))])
        d = 2
    if method == "pca":
        out = PCA(n_components=2, random_state=seed).fit_transform(a)
        return np.ascontiguousarray(out, dtype=np.float32)

    from sklearn.manifold import TSNE

    if d > pca_first:
        a = PCA(n_components=min(pca_first, n), random_state=seed).fit_transform(a)
    perplexity = min(30.0, (n - 1) / 3)
    tsne = TSNE(n_components=2, init="pca", random_state=seed, perplexity=perplexity, learning_rate="auto")
    if threads is None and n >= TSNE_THREADED_ROWS:
        return np.ascontiguousarray(tsne.fit_transform(a), dtype=np.float32)
    with threadpool_limits(limits=max(1, threads or 1), user_api="openmp"):
        return np.ascontiguousarray(tsne.fit_transform(a), dtype=np.float32)


def scatter_2d(
    xy: npt.ArrayLike,
    colors: npt.ArrayLike,
    *,
    names: Sequence[str] | None = None,
    title: str,
) -> bytes:
    """Scatter plot of ``xy`` (N, 2) coloured by the integer ``colors`` (N,) (class or cluster index).

    Negative values are "unknown" (grey). With ``names``, value ``v`` is labelled ``names[v]`` in the legend;
    the legend is shown up to 20 groups.
    """
    p = np.asarray(xy, dtype=np.float64)
    c = np.asarray(colors).astype(np.int64, copy=False).reshape(-1)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"scatter_2d: xy must be (N, 2), got shape {p.shape}")
    if len(c) != len(p):
        raise ValueError(f"scatter_2d: {len(p)} points but {len(c)} colour values")
    values = [int(v) for v in np.unique(c[c >= 0])]
    if names is not None:
        n_colors = max(len(names), (max(values) + 1) if values else 0)
        index = {v: v for v in values}
    else:
        n_colors = len(values)
        index = {v: i for i, v in enumerate(values)}
    palette = _palette(max(n_colors, 1))
    size = float(np.clip(3000.0 / max(len(p), 1), 4.0, 30.0))

    fig = _figure(5.6, 4.4)
    ax = fig.add_subplot()
    unknown = c < 0
    if unknown.any():
        ax.scatter(p[unknown, 0], p[unknown, 1], s=size, color=UNKNOWN_COLOR, label="unknown", linewidths=0)
    for v in values:
        sel = c == v
        label = names[v] if names is not None and v < len(names) else str(v)
        ax.scatter(p[sel, 0], p[sel, 1], s=size, color=palette[index[v]], label=label, linewidths=0, alpha=0.85)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if 0 < len(values) <= 20:
        ax.legend(
            loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7, frameon=False, markerscale=1.5, handletextpad=0.2
        )
    if not len(p):
        ax.text(0.5, 0.5, "no points", ha="center", va="center", transform=ax.transAxes, color="0.3")
    return _png(fig)


# -------------------------------------------------------------------------------------------- curves


def elbow_plot(curves: dict[str, list[tuple[int, float]]], knees: dict[str, int | None]) -> bytes:
    """Inertia against k for every method on one axis, each normalised by its inertia at its smallest k.

    ``knees[name]`` (if given and one of the curve's k) is marked with a ring.
    """
    usable = {name: sorted((int(k), float(v)) for k, v in pts) for name, pts in curves.items() if pts}
    if not usable:
        return _message("no elbow curves", "k-means elbow")
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    palette = _palette(len(usable))
    for i, (name, pts) in enumerate(usable.items()):
        ks = np.array([k for k, _ in pts])
        vals = np.array([v for _, v in pts])
        ref = vals[0]
        norm = vals / ref if np.isfinite(ref) and ref > 0 else vals
        color = palette[i]
        ax.plot(ks, norm, marker=_MARKERS[i % len(_MARKERS)], ms=4, lw=1.4, color=color, label=name)
        knee = knees.get(name)
        if knee is not None and int(knee) in ks:
            y = norm[int(np.flatnonzero(ks == int(knee))[0])]
            ax.plot([knee], [y], marker="o", ms=12, mfc="none", mec=color, mew=2)
            ax.annotate(f"k={knee}", (knee, y), xytext=(6, 6), textcoords="offset points", fontsize=7, color=color)
    ax.set_xlabel("k (number of clusters)")
    ax.set_ylabel("inertia / inertia at smallest k\n(normalised per method)")
    ax.set_title("k-means elbow (rings: suggested k)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    return _png(fig)


def nmi_per_epoch(history: Sequence[dict[str, Any]]) -> bytes:
    """DeepCluster: NMI between consecutive assignments and NMI against the labels, per epoch."""
    series = {
        "nmi_previous": "NMI(assignment t, t-1)",
        "nmi_labels": "NMI(assignment, labels)",
    }
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot()
    drawn = False
    for i, (key, label) in enumerate(series.items()):
        pts = [
            (float(h["epoch"]) if h.get("epoch") is not None else float(j), float(h[key]))
            for j, h in enumerate(history)
            if h.get(key) is not None and math.isfinite(float(h[key]))
        ]
        if not pts:
            continue
        pts.sort()
        ax.plot([e for e, _ in pts], [v for _, v in pts], marker=".", lw=1.5, color=_palette(2)[i], label=label)
        drawn = True
    if not drawn:
        return _message("no NMI recorded", "DeepCluster NMI per epoch")
    ax.set_ylim(0.0, 1.02)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("NMI")
    ax.set_title("DeepCluster NMI per epoch", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def search_history(rows: Sequence[dict[str, Any]], objective: str) -> bytes:
    """A search's optimisation history: each trial's objective (pruned trials hollow) and the best so far."""
    fig = _figure(5.6, 3.4)
    ax = fig.add_subplot()
    pts = [(int(r["trial"]), float(r["value"]), r["state"]) for r in rows if r.get("value") is not None]
    if not pts:
        return _message("no trial has a value yet", "Optimisation history")
    colour = _palette(2)
    done = [(n, v) for n, v, s in pts if s == "complete"]
    pruned = [(n, v) for n, v, s in pts if s != "complete"]
    if done:
        ax.scatter([n for n, _ in done], [v for _, v in done], color=colour[0], s=22, label="trial", zorder=3)
        best, line = -math.inf, []
        for n, v in sorted(done):
            best = max(best, v)
            line.append((n, best))
        ax.step([n for n, _ in line], [b for _, b in line], where="post", color=colour[1], lw=1.5, label="best so far")
    if pruned:
        ax.scatter(
            [n for n, _ in pruned],
            [v for _, v in pruned],
            facecolors="none",
            edgecolors="0.5",
            s=22,
            label="pruned (last value)",
            zorder=3,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.set_title("Optimisation history", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def param_importances(importances: dict[str, float], objective: str) -> bytes:
    """Horizontal bars: each searched option's share of the objective's variance (Optuna's fANOVA)."""
    if not importances:
        return _message("needs at least two finished trials that differ", "Option importances")
    names = sorted(importances, key=importances.__getitem__)
    fig = _figure(5.6, 0.6 + 0.35 * len(names))
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names], color=_palette(1)[0])
    ax.set_xlim(0.0, 1.0)
    ax.set_xlabel(f"importance for {objective}")
    ax.set_title("Option importances", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


def loss_curves(histories: dict[str, list[dict[str, Any]]]) -> bytes:
    """Training loss per epoch, one small panel per method (methods without a recorded loss are left out)."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for name, hist in histories.items():
        pts = []
        for j, h in enumerate(hist or []):
            loss = h.get("loss")
            if loss is None or isinstance(loss, bool):
                continue
            try:
                value = float(loss)
            except (TypeError, ValueError):
                continue
            if math.isfinite(value):
                pts.append((float(h["epoch"]) if h.get("epoch") is not None else float(j), value))
        if pts:
            pts.sort()
            series[name] = ([e for e, _ in pts], [v for _, v in pts])
    if not series:
        return _message("no training (no method recorded a loss)", "training loss")
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig = _figure(3.0 * ncols, 2.3 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    palette = _palette(len(series))
    for i, (name, (epochs, values)) in enumerate(series.items()):
        ax = axes[i // ncols][i % ncols]
        ax.plot(epochs, values, marker="." if len(epochs) < 40 else None, lw=1.4, color=palette[i])
        ax.set_title(name, fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
    for j in range(len(series), nrows * ncols):
        axes[j // ncols][j % ncols].set_axis_off()
    fig.suptitle("training loss", fontsize=10)
    return _png(fig)


# -------------------------------------------------------------------------------------------- tables


def contingency_heatmap(
    table: npt.ArrayLike,
    class_names: Sequence[str],
    cluster_names: Sequence[str] | None = None,
    *,
    title: str,
) -> bytes:
    """Heat map of a (classes × clusters) count table; rows are classes. Counts are written in the cells when
    the table has at most 400 cells."""
    t = np.asarray(table, dtype=np.float64)
    if t.ndim != 2:
        raise ValueError(f"contingency_heatmap: expected a 2-D table, got shape {t.shape}")
    n_rows, n_cols = t.shape
    if n_rows == 0 or n_cols == 0:
        return _message("empty contingency table", title)
    rows = list(class_names) if len(class_names) else [str(i) for i in range(n_rows)]
    cols = list(cluster_names) if cluster_names is not None else [str(j) for j in range(n_cols)]
    if len(rows) != n_rows or len(cols) != n_cols:
        raise ValueError(
            f"contingency_heatmap: table is {n_rows}×{n_cols} but got {len(rows)} class and {len(cols)} cluster names"
        )
    width = float(np.clip(2.0 + 0.38 * n_cols, 4.0, 14.0))
    height = float(np.clip(1.2 + 0.3 * n_rows, 2.6, 12.0))
    fig = _figure(width, height)
    ax = fig.add_subplot()
    vmax = float(t.max()) if t.size else 0.0
    im = ax.imshow(t, cmap="Blues", aspect="auto", interpolation="nearest", vmin=0.0, vmax=max(vmax, 1.0))
    fs = 8 if max(n_rows, n_cols) <= 20 else 6
    if max(n_cols, n_rows) <= 60:
        ax.set_xticks(range(n_cols), cols, fontsize=fs, rotation=90 if max(map(len, cols)) > 3 else 0)
        ax.set_yticks(range(n_rows), rows, fontsize=fs)
    ax.set_xlabel("cluster")
    ax.set_ylabel("class")
    ax.set_title(title, fontsize=10)
    if t.size <= 400:
        cell_fs = 7 if t.size <= 150 else 5
        for (i, j), v in np.ndenumerate(t):
            if v:
                text = f"{int(v)}" if float(v).is_integer() else f"{v:.2g}"
                color = "white" if v > 0.55 * vmax else "0.15"
                ax.text(j, i, text, ha="center", va="center", fontsize=cell_fs, color=color)
    fig.colorbar(im, ax=ax, shrink=0.8, label="items")
    return _png(fig)


# -------------------------------------------------------------------------------------------- thumbnails


def depth_view(grid: npt.ArrayLike, view: View = "front") -> np.ndarray:
    """(H, W) depth image of an (R, R, R) occupancy grid whose up axis is axis 2, row 0 at the top.

    Values are the index of the first occupied voxel along the viewing ray divided by the grid depth minus 1
    (0 = nearest plane, 1 = farthest), NaN where the ray hits nothing.
      * ``front``: looking along +y (axis 1); columns = x (axis 0), rows = z (axis 2) with z up.
      * ``side``:  looking along -x (from the +x side); columns = y (axis 1), rows = z with z up.
      * ``top``:   looking down along -z; columns = x, rows = y with y = 0 at the bottom.
    All three are what a camera would see (right-handed, not mirrored).
    """
    g = np.asarray(grid).astype(bool, copy=False)
    if g.ndim != 3:
        raise ValueError(f"depth_view: expected a 3-D grid, got shape {g.shape}")
    if view == "front":
        occ, axis = g, 1  # result indexed (x, z)
    elif view == "side":
        occ, axis = g[::-1], 0  # first hit from the +x side; result indexed (y, z)
    elif view == "top":
        occ, axis = g[:, :, ::-1], 2  # first hit from the top; result indexed (x, y)
    else:
        raise ValueError(f"depth_view: unknown view {view!r}")
    hit = occ.any(axis=axis)
    first = occ.argmax(axis=axis).astype(np.float64)
    depth = occ.shape[axis]
    d = np.where(hit, first / max(depth - 1, 1), np.nan)  # (horizontal, vertical) in image terms
    return np.ascontiguousarray(d.T[::-1, :])  # rows = vertical axis, largest value at the top


def thumbnail(grid: npt.ArrayLike, views: Sequence[View] = ("front", "side")) -> np.ndarray:
    """(H, W, 3) float RGB image: the depth views of ``grid`` side by side, separated by a 1-pixel gap."""
    panels = []
    for view in views:
        d = depth_view(grid, view)
        shade = 1.0 - (1.0 - _FAR_SHADE) * np.nan_to_num(d, nan=0.0)
        rgb = shade[..., None] * _NEAR_RGB
        rgb = np.where(np.isnan(d)[..., None], _BACKGROUND_RGB, rgb)
        panels.append(rgb)
    if not panels:
        raise ValueError("thumbnail: no views")
    h = max(p.shape[0] for p in panels)
    parts: list[np.ndarray] = []
    for i, p in enumerate(panels):
        if i:
            parts.append(np.broadcast_to(_GAP_RGB, (h, 1, 3)))
        if p.shape[0] < h:
            p = np.concatenate([np.broadcast_to(_BACKGROUND_RGB, (h - p.shape[0], p.shape[1], 3)), p], axis=0)
        parts.append(p)
    return np.concatenate(parts, axis=1)


def _strip(grids: np.ndarray, n_max: int, views: Sequence[View]) -> np.ndarray | None:
    if grids.ndim == 3:
        grids = grids[None]
    if grids.ndim != 4:
        raise ValueError(f"cluster_strips: expected (m, R, R, R) grids, got shape {grids.shape}")
    thumbs = [thumbnail(g, views) for g in grids[:n_max]]
    if not thumbs:
        return None
    h = max(t.shape[0] for t in thumbs)
    gap = max(2, h // 8)
    parts: list[np.ndarray] = []
    for i, t in enumerate(thumbs):
        if i:
            parts.append(np.broadcast_to(_GAP_RGB, (h, gap, 3)))
        if t.shape[0] < h:
            t = np.concatenate([np.broadcast_to(_GAP_RGB, (h - t.shape[0], t.shape[1], 3)), t], axis=0)
        parts.append(t)
    return np.concatenate(parts, axis=1)


def cluster_strips(
    groups: Sequence[tuple[str, npt.ArrayLike]],
    *,
    max_per_cluster: int = 8,
    views: Sequence[View] = ("front", "side"),
) -> bytes:
    """One row of voxel thumbnails per cluster: ``groups`` is a list of (label, (m, R, R, R) grids).

    At most ``max_per_cluster`` members are drawn per row. Each thumbnail shows ``views`` (default: front and
    side depth images, z up; see ``depth_view``). Empty grids are drawn as an empty (grey) thumbnail.
    """
    if not groups:
        return _message("no clusters", "cluster members")
    strips = [(label, _strip(np.asarray(grids), max_per_cluster, views)) for label, grids in groups]
    widest = max((s.shape[1] for _, s in strips if s is not None), default=1)
    tallest = max((s.shape[0] for _, s in strips if s is not None), default=1)
    width, title_h = 9.0, 0.22  # inches
    image_h = min(width * tallest / widest, 1.6)  # height of a row's image when the widest strip fills the width
    height = len(strips) * (image_h + title_h)
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(strips), 1, squeeze=False)[:, 0]
    fig.subplots_adjust(left=0.0, right=1.0, top=1.0 - title_h / height, bottom=0.0, hspace=title_h / image_h)
    for ax, (label, strip) in zip(axes, strips, strict=True):
        ax.set_axis_off()
        ax.set_title(label, loc="left", fontsize=8, pad=2)
        ax.set_anchor("W")
        if strip is None:
            ax.text(0.0, 0.5, "(no members)", fontsize=8, color="0.4", va="center", transform=ax.transAxes)
        else:
            ax.imshow(strip, interpolation="nearest", extent=(0, strip.shape[1], strip.shape[0], 0))
        ax.set_xlim(0, widest)
        ax.set_ylim(tallest, 0)
        ax.set_aspect("equal")
    return _png(fig)
