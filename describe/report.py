"""The describe report: one self-contained HTML file (every image inline as a base64 PNG, no script, no URL).

`build_report(report)` is a pure function of plain data (the JSON each stage writes, plus what
`collect_report` finds on disk), so it depends on no other part's code and is tested on constructed dicts.
Sections, each `<section id=...>` with an `<h2>`, in this order (`SECTIONS`):

========================  ============================================================================
id                        what it shows, from which key of `report`
========================  ============================================================================
``data``                  the images, roles and caption source (``inputs``: `DescribeInputs.summary`)
``bias-table``            the latest `table.json` for the same data (``bias_table``: `find_bias_table`)
``confusion``             classify runs on the same data (``classify_runs``: `find_classify_runs`):
                          confusion matrix, accuracy, correct and wrong val examples as thumbnails
``objects``               ``stages.objects``: ``sources`` {source: {status, reason, model}}, ``share``
                          {source: {dataset: {class: share}}}, ``unique_per_image`` {source: {dataset:
                          [counts]}}, ``ranking`` {source: {dataset: [{class, coef, ci95}]}}
``topics``                ``stages.language``: ``topics`` {dataset: [{words, weights}] or [[words]]},
                          ``wordclouds`` {dataset: PNG}, ``distinctive`` {dataset: [{word, z}]}
``themes``                ``stages.themes``: ``themes`` {dataset: [{title, description, title_source,
                          description_source}]} (a title or description not written by the LLM for the
                          theme is marked on its card: `theme_marks`), ``failed``
``differences``           ``stages.differences``: ``hypotheses`` [{text, dataset, proposer, auroc, p, q,
                          significant, evidence: {images: [sample ids], words, objects}}],
                          ``effect_matrix`` {datasets, hypotheses, values}
``explained``             ``stages.explained``: ``chance``, ``image_accuracy``, ``hypotheses`` {accuracy},
                          ``objects`` {accuracy}, ``sentence``
``models``                every stage's ``models`` / ``model``, the caption source, package versions, the
                          token ledger (``ledger`` of any stage), stage status and wall times, and every
                          skipped or failed item (missing captions, unusable files, stages' ``failed`` /
                          ``skipped`` lists, images that could not be shown)
========================  ============================================================================

A PNG in a stage dict is a path (absolute, or relative to ``base_dir``: the describe folder), a
``{"png": path}`` or a ``{"png_base64": data}``. Keys of a stage dict that a section does not know are shown
as plain tables under "Other results", so nothing a stage writes is hidden. A section with no data says what
is missing and why (the stage's status: not run, skipped, failed, with its reason). All text is escaped.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = (("data", "Data and captions"), ("bias-table", "Bias table"),
            ("confusion", "Confusion matrices and examples"), ("objects", "Object statistics"),
            ("topics", "Topics and words"), ("themes", "LLM themes"), ("differences", "Ranked differences"),
            ("explained", "Explained share"), ("models", "Models and versions"))
#: the stage whose result fills a section
SECTION_STAGE = {"objects": "objects", "topics": "language", "themes": "themes", "differences": "differences",
                 "explained": "explained"}
MAX_ROWS = 60  # rows of a generic table before "... N more"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px;background:#fff}
header{border-bottom:3px solid #2f5d9a;margin-bottom:10px}h1{font-size:1.7em;margin:0 0 6px}
h2{font-size:1.3em;border-bottom:1px solid #d5d9e0;padding-bottom:4px;margin-top:38px;color:#21406b}
h3{font-size:1.05em;margin:20px 0 6px}h4{font-size:.95em;margin:12px 0 4px;color:#444}
nav a{margin-right:12px;color:#2f5d9a;text-decoration:none;font-size:.92em}
table{border-collapse:collapse;margin:6px 0 14px;font-size:.88em}
th,td{border:1px solid #d5d9e0;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6}tr:nth-child(even) td{background:#fafbfc}td.num{text-align:right;font-variant-numeric:tabular-nums}
.missing{color:#8a5a00;background:#fff7e6;border-left:4px solid #e0a000;padding:6px 10px}
.note{color:#555;font-size:.9em}.sig{color:#0a6b2f;font-weight:600}.ns{color:#777}
figure{display:inline-block;margin:6px 12px 6px 0;vertical-align:top}figcaption{font-size:.8em;color:#555;max-width:260px}
img.fig{max-width:100%;border:1px solid #e3e6eb}img.thumb{border:1px solid #ccd;image-rendering:pixelated}
.thumbs{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 10px}.card{border:1px solid #dde2ea;border-radius:6px;
padding:8px 12px;margin:8px 0;background:#fcfdff}.theme-title{font-weight:600}
"""


def esc(value: Any) -> str:
    """Any value as escaped HTML text (None as an empty string, floats to 4 significant digits)."""
    if value is None:
        return ""
    if isinstance(value, float):
        return html.escape(_num(value))
    return html.escape(str(value), quote=True)


def _num(x: Any) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    x = float(x)
    if math.isnan(x):
        return "nan"
    if x == int(x) and abs(x) < 1e12:
        return str(int(x))
    return f"{x:.4g}"


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.1f}%"
    except (TypeError, ValueError):
        return esc(x)


# --- images ---------------------------------------------------------------------------------------------

def png_base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def img_tag(png: bytes, alt: str, cls: str = "fig", width: int | None = None) -> str:
    size = f' width="{int(width)}"' if width else ""
    return f'<img class="{cls}" alt="{esc(alt)}"{size} src="data:image/png;base64,{png_base64(png)}">'


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """A matplotlib figure as PNG bytes (then closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def thumbnail_png(path: str, size: int) -> bytes:
    """An image (anything `bias.data.sources.load_image` reads) shrunk to `size` px on its longer side, as PNG."""
    from PIL import Image

    from bias.data.sources import load_image

    image = Image.fromarray(load_image(path))
    image.thumbnail((size, size), Image.LANCZOS)
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


class Builder:
    """Holds the report's data while the sections are written; collects the images it could not show."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.r = report
        self.base = Path(str(report.get("base_dir") or "."))
        self.images: dict[str, str] = dict(report.get("images") or {})
        self.thumb = int((report.get("options") or {}).get("thumb_size", 96))
        self.unshown: list[dict[str, str]] = []

    def stage(self, name: str) -> dict[str, Any] | None:
        result = (self.r.get("stages") or {}).get(name)
        return result if isinstance(result, Mapping) and result else None

    def png_of(self, ref: Any) -> bytes | None:
        """The PNG bytes of a stage's image reference (path, {png: path} or {png_base64: data})."""
        try:
            if isinstance(ref, Mapping):
                if ref.get("png_base64"):
                    return base64.b64decode(ref["png_base64"])
                ref = ref.get("png") or ref.get("path")
            if not ref:
                return None
            path = Path(str(ref))
            path = path if path.is_absolute() else self.base / path
            return path.read_bytes()
        except (OSError, ValueError) as err:
            self.unshown.append({"item": str(ref), "reason": f"figure not readable: {err}"})
            return None

    def image(self, ref: Any, alt: str, caption: str | None = None) -> str:
        png = self.png_of(ref)
        if png is None:
            return f'<p class="missing">{esc(alt)}: no image ({esc(ref)})</p>'
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return f"<figure>{img_tag(png, alt)}{cap}</figure>"

    def thumb_of(self, sample: str, caption: str | None = None) -> str:
        """A thumbnail of a sample (its id, looked up in `images`, or a readable path)."""
        path = self.images.get(sample, sample)
        try:
            png = thumbnail_png(path, self.thumb)
        except Exception as err:  # noqa: BLE001 - any unreadable image is listed, never fatal to the report
            self.unshown.append({"item": str(sample), "reason": f"image not readable: {type(err).__name__}: {err}"})
            return f'<figure><span class="missing">{esc(Path(str(sample)).name)} (unreadable)</span></figure>'
        cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
        return f'<figure>{img_tag(png, str(sample), "thumb")}{cap}</figure>'


# --- generic rendering ----------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f'<td class="num">{esc(_num(value))}</td>'
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
        return f"<td>{esc(', '.join(_num(v) for v in value))}</td>"
    if isinstance(value, (Mapping, list, tuple)):
        return f"<td><code>{esc(json.dumps(value, default=str)[:300])}</code></td>"
    return f"<td>{esc(value)}</td>"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
          headers: Sequence[str] | None = None, max_rows: int = MAX_ROWS) -> str:
    """Rows of dicts as an HTML table (columns: the given ones, else every key in first-seen order)."""
    rows = list(rows)
    if not rows:
        return '<p class="note">(no rows)</p>'
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    heads = list(headers or columns)
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in heads) + "</tr></thead>" if any(heads) else ""
    body = "".join("<tr>" + "".join(_cell(r.get(c)) for c in columns) + "</tr>" for r in rows[:max_rows])
    more = f'<p class="note">... {len(rows) - max_rows} more rows (in the JSON)</p>' if len(rows) > max_rows else ""
    return f"<table>{head}<tbody>{body}</tbody></table>{more}"


def generic(value: Any, depth: int = 0) -> str:
    """Any JSON value as readable HTML: tables for lists of dicts and flat dicts, nested headings otherwise."""
    if isinstance(value, Mapping):
        if not value:
            return '<p class="note">(empty)</p>'
        if all(not isinstance(v, (Mapping, list, tuple)) or _flat_list(v) for v in value.values()):
            return table([{"key": k, "value": v} for k, v in value.items()], ["key", "value"], ["", ""])
        tag = "h4" if depth else "h3"
        return "".join(f"<{tag}>{esc(k)}</{tag}>{generic(v, depth + 1)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, Mapping) for v in value):
            return table(value)
        return f"<p>{esc(', '.join(_num(v) for v in value)) or '(empty)'}</p>"
    return f"<p>{esc(_num(value))}</p>"


def _flat_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(not isinstance(x, (Mapping, list, tuple)) for x in v)


def missing(reason: str) -> str:
    return f'<p class="missing">{esc(reason)}</p>'


def _stage_missing(b: Builder, section: str) -> str:
    stage = SECTION_STAGE[section]
    st = (b.r.get("status") or {}).get(stage) or {}
    state = st.get("status", "not run")
    reason = st.get("reason") or "no result was written"
    return missing(f"Stage {stage!r}: {state}. {reason}")


def _others(result: Mapping[str, Any], known: set[str]) -> str:
    rest = {k: v for k, v in result.items() if k not in known}
    return f"<h3>Other results</h3>{generic(rest, 1)}" if rest else ""


# --- sections -------------------------------------------------------------------------------------------

def section_data(b: Builder) -> str:
    inputs = b.r.get("inputs")
    if not inputs:
        return missing("No inputs were recorded.")
    rows = [{"dataset": k, **v} for k, v in (inputs.get("per_dataset") or {}).items()]
    src = inputs.get("caption_source") or {}
    text = (f"<p>{esc(inputs.get('n_images'))} images of {esc(len(inputs.get('datasets') or []))} datasets; "
            f"captions from <b>{esc(src.get('transform'))}</b> (captioner {esc(src.get('captioner'))}); "
            f"propose share {esc(inputs.get('propose_fraction'))}, roles drawn with seed {esc(inputs.get('seed'))}; "
            f"{'planted scene records used' if inputs.get('records') else 'no scene records (not planted data)'}.</p>")
    n_missing = int(inputs.get("n_missing_captions") or 0)
    note = (f"<p>{n_missing} images have no caption; they are listed under Models and versions.</p>"
            if n_missing else "<p>Every image has a caption.</p>")
    return text + table(rows) + note


def section_bias_table(b: Builder) -> str:
    bt = b.r.get("bias_table")
    if not bt:
        why = b.r.get("bias_table_missing") or "no table.json for this data was found"
        return missing(f"No bias table: {why}.")
    rows = [{"transform": r.get("label"), "family": r.get("family"), "accuracy": _pct(r.get("mean")),
             "std": _pct(r.get("std")), "95% interval": f"{_pct((r.get('ci95') or [None, None])[0])}-"
             f"{_pct((r.get('ci95') or [None, None])[1])}", "chance": _pct(r.get("chance")),
             "seeds": len(r.get("accuracies") or []), "verdict": r.get("marker") or "learned"}
            for r in bt.get("rows") or []]
    out = f'<p class="note">From {esc(bt.get("path"))}.</p>' + table(rows)
    if bt.get("figure"):
        out += b.image(bt["figure"], "bias table figure")
    for ex in bt.get("examples") or []:
        out += b.image(ex, f"examples {Path(str(ex)).stem}", Path(str(ex)).stem)
    return out


def _confusion_png(run: Mapping[str, Any], b: Builder) -> bytes | None:
    if run.get("confusion_png"):
        png = b.png_of(run["confusion_png"])
        if png is not None:
            return png
    cm = np.asarray(run.get("confusion") or [], dtype=float)
    names = list(run.get("datasets") or [])
    if cm.ndim != 2 or cm.shape[0] != len(names) or not len(names):
        return None
    plt = _plt()
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 * len(names) + 2, 0.9 * len(names) + 1.4))
    ax.imshow(rows, vmin=0, vmax=1, cmap="Blues")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, f"{100 * rows[i, j]:.0f}%\n({int(cm[i, j])})", ha="center", va="center", fontsize=8,
                    color="white" if rows[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return figure_png(fig)


def section_confusion(b: Builder) -> str:
    runs = b.r.get("classify_runs") or []
    if not runs:
        why = b.r.get("classify_runs_missing") or "no classify run on this data was found"
        return missing(f"No confusion matrices: {why}.")
    out = []
    for run in runs:
        title = " / ".join(str(run.get(k)) for k in ("transform", "model", "recipe") if run.get(k)) + \
            f" / seed {run.get('seed')}"
        acc = (f"accuracy {_pct(run.get('accuracy'))} (95% CI {_pct((run.get('ci95') or [None])[0])}-"
               f"{_pct((run.get('ci95') or [None, None])[1])}), chance {_pct(run.get('chance'))}")
        png = _confusion_png(run, b)
        part = [f'<div class="card"><h3>{esc(title)}</h3><p>{esc(acc)} <span class="note">{esc(run.get("run_dir"))}'
                f"</span></p>", img_tag(png, f"confusion {title}") if png else missing("no confusion matrix")]
        for dataset, ex in (run.get("examples") or {}).items():
            thumbs = [b.thumb_of(p, "correct") for p in ex.get("correct") or []]
            thumbs += [b.thumb_of(w["path"], f"predicted {w.get('predicted')}") for w in ex.get("wrong") or []]
            if thumbs:
                part.append(f"<h4>{esc(dataset)}</h4><div class=\"thumbs\">{''.join(thumbs)}</div>")
        out.append("".join(part) + "</div>")
    return "".join(out)


def _share_figure(share: Mapping[str, Mapping[str, float]], source: str, top: int) -> bytes | None:
    datasets = list(share)
    classes = sorted({c for d in datasets for c in share[d]})
    if not classes or not datasets:
        return None
    values = np.array([[float(share[d].get(c, 0.0)) for c in classes] for d in datasets])
    spread = values.max(axis=0) - values.min(axis=0)
    keep = np.argsort(-spread, kind="stable")[:top]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(keep) * len(datasets) / 2 + 1.6))
    height = 0.8 / len(datasets)
    y = np.arange(len(keep))
    for i, d in enumerate(datasets):
        ax.barh(y + i * height, 100 * values[i, keep], height=height, label=d)
    ax.set_yticks(y + 0.4 - height / 2, [classes[k] for k in keep], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("images containing the class (%)")
    ax.set_title(f"{source}: classes whose share differs most", fontsize=10)
    ax.legend(fontsize=8)
    return figure_png(fig)


def _box_figure(counts: Mapping[str, Sequence[float]], source: str) -> bytes | None:
    names = [d for d in counts if len(counts[d])]
    if not names:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.3 * len(names) + 2, 3))
    ax.boxplot([np.asarray(counts[d], dtype=float) for d in names])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20)
    ax.set_ylabel("unique classes per image")
    ax.set_title(source, fontsize=10)
    return figure_png(fig)


def section_objects(b: Builder) -> str:
    res = b.stage("objects")
    if res is None:
        return _stage_missing(b, "objects")
    out = []
    sources = res.get("sources") or {}
    if sources:
        rows = [{"source": k, **(v if isinstance(v, Mapping) else {"status": v})} for k, v in sources.items()]
        out.append("<h3>Sources</h3>" + table(rows))
    top = int(res.get("top_classes") or 15)
    for source, share in (res.get("share") or {}).items():
        png = _share_figure(share, source, top)
        out.append(f"<h3>Share of images per class: {esc(source)}</h3>" +
                   (img_tag(png, f"class shares {source}") if png else missing("no classes")))
    for source, counts in (res.get("unique_per_image") or {}).items():
        png = _box_figure(counts, source)
        out.append(f"<h3>Unique classes per image: {esc(source)}</h3>" +
                   (img_tag(png, f"unique classes {source}") if png else missing("no counts")))
    for source, per in (res.get("ranking") or {}).items():
        out.append(f"<h3>Most distinctive classes (one-vs-rest logistic regression): {esc(source)}</h3>")
        for dataset, rows in per.items():
            shown = [{"class": r.get("class"), "coef": r.get("coef"),
                      "95% CI": "-".join(_num(x) for x in (r.get("ci95") or [])), **{k: v for k, v in r.items()
                      if k not in ("class", "coef", "ci95")}} for r in rows[:top]]
            out.append(f"<h4>{esc(dataset)}</h4>" + table(shown))
    out.append(_others(res, {"sources", "share", "unique_per_image", "ranking", "top_classes", "models", "model",
                             "failed", "skipped", "table_files"}))
    return "".join(out)


def section_topics(b: Builder) -> str:
    res = b.stage("language")
    if res is None:
        return _stage_missing(b, "topics")
    out = []
    for dataset, topics in (res.get("topics") or {}).items():
        rows = []
        for i, t in enumerate(topics):
            words = t.get("words") if isinstance(t, Mapping) else t
            rows.append({"topic": i + 1, "words": ", ".join(str(w) for w in words or [])})
        out.append(f"<h3>LDA topics: {esc(dataset)}</h3>" + table(rows))
    clouds = res.get("wordclouds") or {}
    if clouds:
        out.append("<h3>Word clouds</h3>" + "".join(b.image(ref, f"word cloud {d}", d) for d, ref in clouds.items()))
    for dataset, words in (res.get("distinctive") or {}).items():
        out.append(f"<h3>Distinctive words (log-odds, informative Dirichlet prior): {esc(dataset)}</h3>" +
                   table(words))
    out.append(_others(res, {"topics", "wordclouds", "distinctive", "models", "model", "failed", "skipped",
                             "table_files"}))
    return "".join(out) or missing("The language stage wrote no topics, word clouds or words.")


#: what a theme card says about where its title / description came from (describe.themes' title_source and
#: description_source); ``written`` (the LLM wrote it for this theme) needs no mark
TITLE_MARKS = {"chosen": "title chosen, not written: the LLM's title for this group was unusable, so the group's "
                         "most central chunk title is shown",
               "chunk": "title of the theme's one chunk (written for that caption chunk, not for the theme)"}
DESCRIPTION_MARKS = {"members": "description is the member list: the LLM's sentence was unusable, so the chunk "
                                "titles of the theme are listed"}


def theme_marks(theme: Mapping[str, Any]) -> list[str]:
    """The notes a theme card shows when its title or description was not written by the LLM for it (so a
    reader never takes a chosen title or a listed description for the model's words); unknown sources are named."""
    marks = []
    title, desc = theme.get("title_source"), theme.get("description_source")
    if title not in (None, "written"):
        marks.append(TITLE_MARKS.get(str(title), f"title source: {title}"))
    if desc not in (None, "written"):
        marks.append(DESCRIPTION_MARKS.get(str(desc), f"description source: {desc}"))
    return marks


def section_themes(b: Builder) -> str:
    res = b.stage("themes")
    if res is None:
        return _stage_missing(b, "themes")
    out = []
    for dataset, themes in (res.get("themes") or {}).items():
        cards = []
        for t in themes:
            if not isinstance(t, Mapping):
                t = {"title": t}
            body = t.get("description") or t.get("summary") or t.get("text") or ""
            marks = theme_marks(t)
            note = f'<div class="note theme-source">{esc("; ".join(marks))}</div>' if marks else ""
            cards.append(f'<div class="card"><div class="theme-title">{esc(t.get("title"))}</div>{note}'
                         f"<div>{esc(body)}</div></div>")
        out.append(f"<h3>{esc(dataset)}</h3>" + ("".join(cards) or missing("no theme parsed for this dataset")))
    failed = res.get("failed") or []
    if failed:
        out.append(f"<h3>Failed generations ({len(failed)}; never shown as content)</h3>" + table(failed))
    out.append(_others(res, {"themes", "failed", "models", "model", "ledger", "skipped", "table_files"}))
    return "".join(out) or missing("The themes stage wrote no themes.")


def _effect_figure(em: Mapping[str, Any]) -> bytes | None:
    values = np.asarray(em.get("values") or [], dtype=float)
    datasets, hyps = list(em.get("datasets") or []), list(em.get("hypotheses") or [])
    if values.ndim != 2 or values.shape != (len(datasets), len(hyps)) or not values.size:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(min(14, 0.45 * len(hyps) + 3), 0.5 * len(datasets) + 2.4))
    im = ax.imshow(values, cmap="RdBu_r", vmin=-max(0.5, np.nanmax(np.abs(values))),
                   vmax=max(0.5, np.nanmax(np.abs(values))), aspect="auto")
    ax.set_yticks(range(len(datasets)), datasets)
    ax.set_xticks(range(len(hyps)), [str(h)[:40] for h in hyps], rotation=60, ha="right", fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.03, label=str(em.get("label") or "effect (AUROC - 0.5)"))
    return figure_png(fig)


def section_differences(b: Builder) -> str:
    res = b.stage("differences")
    if res is None:
        return _stage_missing(b, "differences")
    hyps = list(res.get("hypotheses") or [])
    out = []
    if res.get("similarity"):
        out.append(f'<p class="note">Similarity: {esc(json.dumps(res["similarity"], default=str))}</p>')
    if hyps:
        hyps.sort(key=lambda h: (not h.get("significant"), -(h.get("auroc") or 0)))
        rows = [{"rank": i + 1, "dataset": h.get("dataset"), "hypothesis": h.get("text"),
                 "proposer": h.get("proposer"), "AUROC": h.get("auroc"), "p": h.get("p"), "q": h.get("q"),
                 "significant": bool(h.get("significant"))} for i, h in enumerate(hyps)]
        out.append("<h3>Ranked hypotheses</h3>" + table(rows))
        out.append("<h3>Evidence</h3>")
        for h in hyps[:MAX_ROWS]:
            ev = h.get("evidence") or {}
            mark = '<span class="sig">significant</span>' if h.get("significant") else '<span class="ns">n.s.</span>'
            part = [f'<div class="card"><div class="theme-title">{esc(h.get("dataset"))}: {esc(h.get("text"))} '
                    f"{mark}</div><div class=\"note\">AUROC {esc(_num(h.get('auroc')))}, q {esc(_num(h.get('q')))}"
                    f"</div>"]
            images = ev.get("images") or ev.get("top_images") or []
            if images:
                part.append('<div class="thumbs">' + "".join(b.thumb_of(str(s)) for s in images) + "</div>")
            if ev.get("words"):
                words = ev["words"]
                part.append("<div>words: " + esc(", ".join(w.get("word", str(w)) if isinstance(w, Mapping) else str(w)
                                                            for w in words)) + "</div>")
            if ev.get("objects"):
                part.append("<div>objects:</div>" + table(ev["objects"]))
            out.append("".join(part) + "</div>")
    else:
        out.append(missing("No hypothesis was proposed and scored."))
    if res.get("effect_matrix"):
        png = _effect_figure(res["effect_matrix"])
        out.append("<h3>Effect matrix (dataset x hypothesis)</h3>" +
                   (img_tag(png, "effect matrix") if png else missing("effect matrix has no values")))
    out.append(_others(res, {"hypotheses", "effect_matrix", "similarity", "models", "model", "ledger", "failed",
                             "skipped", "table_files"}))
    return "".join(out)


def section_explained(b: Builder) -> str:
    res = b.stage("explained")
    if res is None:
        return _stage_missing(b, "explained")
    bars = {"chance": res.get("chance"), "image classifier": res.get("image_accuracy"),
            "top-k hypotheses": (res.get("hypotheses") or {}).get("accuracy")
            if isinstance(res.get("hypotheses"), Mapping) else res.get("hypotheses"),
            "object presence": (res.get("objects") or {}).get("accuracy")
            if isinstance(res.get("objects"), Mapping) else res.get("objects")}
    bars = {k: float(v) for k, v in bars.items() if isinstance(v, (int, float))}
    out = [f"<p><b>{esc(res['sentence'])}</b></p>"] if res.get("sentence") else []
    if bars:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.barh(list(bars), [100 * v for v in bars.values()], color=["0.6", "tab:blue", "tab:green", "tab:orange"]
                [:len(bars)])
        ax.set_xlim(0, 100)
        ax.set_xlabel("dataset classification accuracy (%)")
        for i, v in enumerate(bars.values()):
            ax.text(100 * v + 1, i, f"{100 * v:.1f}", va="center", fontsize=8)
        out.append(img_tag(figure_png(fig), "explained share"))
    out.append(_others(res, {"sentence", "models", "model", "failed", "skipped", "table_files"} |
                       ({"chance", "image_accuracy", "hypotheses", "objects"} if bars else set())))
    return "".join(out)


def _ledgers(b: Builder) -> dict[str, Any]:
    found = {}
    for name, res in (b.r.get("stages") or {}).items():
        if isinstance(res, Mapping):
            for key in ("ledger", "token_ledger", "tokens"):
                if res.get(key):
                    found[name] = res[key]
    return found


def section_models(b: Builder) -> str:
    out = []
    models = []
    src = (b.r.get("inputs") or {}).get("caption_source") or {}
    if src:
        models.append({"used by": "captions", "what": src.get("transform"),
                       "identity": {"captioner": src.get("captioner"), **(src.get("model") or {})}})
    for name, res in (b.r.get("stages") or {}).items():
        if not isinstance(res, Mapping):
            continue
        ms = res.get("models") or ([res["model"]] if res.get("model") else [])
        if isinstance(ms, Mapping):
            ms = [{"name": k, **(v if isinstance(v, Mapping) else {"value": v})} for k, v in ms.items()]
        for m in ms:
            models.append({"used by": name, "what": m.get("name") or m.get("id") if isinstance(m, Mapping) else m,
                           "identity": m})
    out.append("<h3>Models</h3>" + (table(models) if models else missing("No model identities were recorded.")))
    versions = b.r.get("versions") or {}
    if versions:
        out.append("<h3>Package versions</h3>" + generic(versions, 1))
    ledgers = _ledgers(b)
    out.append("<h3>Token ledger</h3>" + (generic(ledgers, 1) if ledgers else
                                          missing("No token ledger: no stage that calls an LLM wrote one.")))
    status = b.r.get("status") or {}
    times = b.r.get("times") or {}
    rows = [{"stage": n, "status": s.get("status"), "reason": s.get("reason"), "seconds": times.get(n)}
            for n, s in status.items()]
    rows += [{"stage": n, "status": "", "reason": "", "seconds": t} for n, t in times.items() if n not in status]
    out.append("<h3>Stages and wall times</h3>" + table(rows))
    out.append("<h3>Skipped and failed items</h3>" + _skipped(b))
    return "".join(out)


def _skipped(b: Builder) -> str:
    rows = []
    inputs = b.r.get("inputs") or {}
    for m in inputs.get("missing_captions") or []:
        rows.append({"where": "captions", "item": m.get("sample_id"), "reason": m.get("reason")})
    for f in (inputs.get("caption_source") or {}).get("unusable_files") or []:
        rows.append({"where": "data", "item": f.get("path"), "reason": f.get("reason")})
    for name, res in (b.r.get("stages") or {}).items():
        if isinstance(res, Mapping):
            for key in ("failed", "skipped"):
                for f in res.get(key) or []:
                    item = f if isinstance(f, Mapping) else {"reason": f}
                    rows.append({"where": f"{name} ({key})", "item": item.get("item") or item.get("sample_id") or
                                 item.get("path") or item.get("dataset") or "", "reason": item.get("reason") or
                                 json.dumps(item, default=str)[:200]})
    rows += [{"where": "report", **u} for u in b.unshown]
    return table(rows) if rows else "<p>None: every item was used.</p>"


RENDER = {"data": section_data, "bias-table": section_bias_table, "confusion": section_confusion,
          "objects": section_objects, "topics": section_topics, "themes": section_themes,
          "differences": section_differences, "explained": section_explained, "models": section_models}


def build_report(report: Mapping[str, Any]) -> str:
    """The HTML of the whole report (see the module docstring for the keys of `report`)."""
    b = Builder(report)
    title = str(report.get("title") or "Dataset description")
    bodies = {sid: RENDER[sid](b) for sid, _ in SECTIONS if sid != "models"}
    bodies["models"] = RENDER["models"](b)  # last: it lists what the other sections could not show
    nav = "".join(f'<a href="#{sid}">{esc(head)}</a>' for sid, head in SECTIONS)
    sections = "".join(f'<section id="{sid}"><h2>{esc(head)}</h2>{bodies[sid]}</section>' for sid, head in SECTIONS)
    sub = esc(report.get("subtitle") or "")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><main><header><h1>{esc(title)}</h1><p class=\"note\">{sub}</p>"
            f"<nav>{nav}</nav></header>{sections}</main></body></html>\n")


def write_report(report: Mapping[str, Any], path: str | Path) -> Path:
    """`build_report` written atomically to `path`."""
    from bias.core.io import write_text_atomic

    path = Path(path)
    write_text_atomic(path, build_report(report))
    return path


# --- what collect_report finds on disk ------------------------------------------------------------------

def comparable_data(data: Mapping[str, Any]) -> dict[str, Any]:
    """A data config as it decides results (what a classify run's experiment.json records under `data`)."""
    plain = json.loads(json.dumps(dict(data), default=str))
    plain.pop("expected", None)
    if not (plain.get("near_duplicates") or {}).get("enabled"):
        plain.pop("near_duplicates", None)
    return plain


def _same_data(run_dir: Path, data: Mapping[str, Any]) -> bool:
    try:
        recorded = json.loads((run_dir / "experiment.json").read_text()).get("data") or {}
    except (OSError, ValueError):
        return False
    return comparable_data(recorded) == comparable_data(data)


def find_bias_table(runs_root: str | Path, data: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The latest table.json under runs_root/<data>/ whose runs used the same data: (its dict, why none)."""
    root = Path(runs_root) / str(data["name"])
    candidates = sorted(root.glob("*/table.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        try:
            rows = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        dirs = [Path(d) for r in rows for d in r.get("run_dirs") or []]
        if dirs and all(_same_data(d, data) for d in dirs[:1]):
            figure = path.parent / "table.png"
            examples = sorted((path.parent / "examples").glob("*.png"))
            return ({"path": str(path), "rows": rows, "figure": str(figure) if figure.exists() else None,
                     "examples": [str(e) for e in examples]}, "")
    why = (f"no table.json under {root} (run python scripts/table.py data={data['name']})" if not candidates else
           f"the {len(candidates)} table(s) under {root} were made on other data settings")
    return None, why


def _examples(run_dir: Path, datasets: Sequence[str], k: int) -> dict[str, dict[str, Any]]:
    """The first `k` correct and `k` wrong val predictions of every dataset (file order, so deterministic)."""
    import pyarrow.csv as pacsv

    path = run_dir / "predictions.csv"
    if k <= 0 or not path.exists():
        return {}
    t = pacsv.read_csv(path).to_pydict()
    out: dict[str, dict[str, Any]] = {d: {"correct": [], "wrong": []} for d in datasets}
    for p, d, q in zip(t["path"], t["dataset"], t["predicted"]):
        slot = out.setdefault(str(d), {"correct": [], "wrong": []})
        if d == q and len(slot["correct"]) < k:
            slot["correct"].append(str(p))
        elif d != q and len(slot["wrong"]) < k:
            slot["wrong"].append({"path": str(p), "predicted": str(q)})
    return out


def find_classify_runs(runs_root: str | Path, data: Mapping[str, Any], max_runs: int,
                       examples_per_dataset: int) -> tuple[list[dict[str, Any]], str]:
    """Finished classify runs under runs_root/<data>/<transform>/<recipe-hash>/seed*/ on the same data, the latest
    first: (plain dicts for the confusion section, why none)."""
    root = Path(runs_root) / str(data["name"])
    found = sorted(root.glob("*/*/seed*/results.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    runs = []
    for path in found:
        if len(runs) >= max_runs:
            break
        if not _same_data(path.parent, data):
            continue
        try:
            r = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        png = path.parent / "confusion.png"
        runs.append({"run_dir": str(path.parent), "transform": r.get("transform"), "model": r.get("model"),
                     "recipe": r.get("recipe"), "seed": r.get("seed"), "accuracy": r.get("accuracy"),
                     "ci95": r.get("ci95"), "chance": r.get("chance"), "datasets": r.get("datasets"),
                     "confusion": r.get("confusion"), "confusion_png": str(png) if png.exists() else None,
                     "examples": _examples(path.parent, r.get("datasets") or [], examples_per_dataset)})
    why = "" if runs else (f"no finished classify run under {root} (run python scripts/classify.py "
                           f"data={data['name']})" if not found else
                           f"the {len(found)} classify run(s) under {root} used other data settings")
    return runs, why


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour the results depend on (absent ones are left out)."""
    import platform
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("understand-bias", "torch", "transformers", "timm", "open_clip_torch", "scikit-learn", "numpy",
                 "wordcloud", "gguf", "matplotlib", "pyarrow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def collect_report(plain: Mapping[str, Any], inputs: Any, results: Mapping[str, Mapping[str, Any]],
                   status: Mapping[str, Mapping[str, Any]], times: Mapping[str, float], out_dir: str | Path,
                   side_outputs: Sequence[str] = ()) -> dict[str, Any]:
    """Everything `build_report` reads, as plain data: the stage results and what is found on disk."""
    data = plain["data"]
    opts = dict(plain.get("report") or {})
    runs_root = plain.get("runs_root") or "runs"
    table_, table_why = find_bias_table(runs_root, data)
    runs, runs_why = find_classify_runs(runs_root, data, int(opts.get("max_runs", 12)),
                                        int(opts.get("examples_per_dataset", 4)))
    summary = inputs.summary()
    return {"title": f"Dataset description: {data['name']}",
            "subtitle": f"{len(inputs)} images of {', '.join(inputs.datasets)}; side outputs present: "
                        f"{', '.join(side_outputs) or 'none'}",
            "base_dir": str(out_dir), "options": opts, "inputs": summary, "images": inputs.image_of(),
            "stages": {k: dict(v) for k, v in results.items()}, "status": {k: dict(v) for k, v in status.items()},
            "times": dict(times), "bias_table": table_, "bias_table_missing": table_why, "classify_runs": runs,
            "classify_runs_missing": runs_why, "versions": package_versions()}
