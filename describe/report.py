"""The describe report: one self-contained HTML file (every image inline as a base64 PNG, no script, no URL), and
its summary as JSON (`summary.json`).

`build_report(report)` is a pure function of plain data (the JSON each stage writes, plus what
`collect_report` finds on disk), so it depends on no other part's code and is tested on constructed dicts. The
HTML comes from the Jinja2 template ``describe/templates/report.html.j2`` with autoescape on: Python builds plain
data (texts, numbers, image data URIs, tables as rows of cells), never HTML, so every text and file name is
escaped by the template.

The page opens with the **summary** (`summarize`; the same content is `summary.json`), then the sections of
`SECTIONS`, each `<section id=...>` with an `<h2>`, in this order:

========================  ============================================================================
id                        what it shows, from which key of `report`
========================  ============================================================================
``summary``               `summarize`: per dataset its significant traits, the explained share (below)
``data``                  the images, roles and caption source (``inputs``: `DescribeInputs.summary`)
``explained``             ``stages.explained``: ``chance``, ``image_accuracy``, ``hypotheses`` {accuracy},
                          ``objects`` {accuracy}, ``sentence``
``differences``           ``stages.differences``: ``hypotheses`` [{text, dataset, proposer, auroc, share_in,
                          share_out, p, q, significant, evidence: {images: [sample ids], words, objects}}],
                          ``effect_matrix`` {datasets, hypotheses, values}; every hypothesis here was tested
``objects``               ``stages.objects``: ``sources`` {source: {status, reason, model}}, ``share``
                          {source: {dataset: {class: share}}}, ``unique_per_image`` {source: {dataset:
                          [counts]}}, ``ranking`` {source: {dataset: [{class, coef, ci95}]}}
``topics``                ``stages.language``: ``topics`` {dataset: [{words, weights}] or [[words]]},
                          ``wordclouds`` {dataset: PNG}, ``distinctive`` {dataset: [{word, z}]}
``bias-table``            the latest `table.json` for the same data (``bias_table``: `find_bias_table`)
``confusion``             classify runs on the same data (``classify_runs``: `find_classify_runs`):
                          confusion matrix, accuracy, correct and wrong val examples as thumbnails
``themes``                appendix A, untested LLM text: ``stages.themes``: ``themes`` {dataset: [{title,
                          description, title_source, description_source}]} (a title or description not
                          written by the LLM for the theme is marked on its card: `theme_marks`). These were
                          never tested against the images, so they are not findings.
``models``                appendix B, diagnostics, collapsed: every stage's ``models`` / ``model``, the caption
                          source, package versions, the token ledger (``ledger`` of any stage), stage status
                          and wall times, cache use, failed LLM calls, and every skipped or failed item, and
                          the keys of a stage dict that no section knows ("other results")
========================  ============================================================================

A PNG in a stage dict is a path (absolute, or relative to ``base_dir``: the describe folder), a
``{"png": path}`` or a ``{"png_base64": data}``. A section with no data says what is missing and why (the
stage's status: not run, skipped, failed, with its reason).

summary.json (`SUMMARY_SCHEMA`, validated by `check_summary`)
----------------------------------------------------------------

``schema``       "describe.summary/1"
``title``        the report's title
``alpha``        the Benjamini-Hochberg level a trait's q-value is below
``captioner``    {``name``: the captioner that wrote the captions ("unknown" when not recorded), ``transform``,
                 ``model`` (its identity or null), ``about``: what follows from it for the traits}
``sample``       {``n_images``, ``per_dataset``: {name: {``images``, ``propose``, ``score``}}, ``rule``: how the
                 images were drawn ("" if not recorded), ``available``: {name: usable images there were}}
``datasets``     {name: {``n_images``, ``n_scored``, ``findings``: [...], ``none_reason`` (why there is no
                 finding, or null), ``bias_table``: [{``label``, ``recall``}] (this dataset's row of the bias table:
                 the share of its val images each transform's classifier recognises; empty without a table)}}
``findings[]``   {``text``: the short phrase; ``hypothesis``: the tested text; ``auroc``; ``share_in`` /
                 ``share_out``: the share of this dataset's / the rest's scored images above the similarity cut
                 that separates them best (null when the stage did not record it); ``q``; ``proposer``;
                 ``evidence``: up to 4 sample ids (the dataset's images most similar to the trait); ``merged``:
                 the texts of the near-duplicate traits folded into it}. Only traits with q < alpha and
                 AUROC > 0.5, at most `MAX_FINDINGS`, by AUROC (largest first); two traits whose content words are
                 the same, or one a subset of the other's, are near-duplicates (`content_words`).
``explained``    {``status``: "done" (a share against a classify run), "missing" (no classify run: ``command``
                 runs one) or "not run"; ``sentence``; ``share``: the hypotheses' share of the image classifier's
                 points above chance or null; ``objects_share``; ``image_accuracy``; ``command``}
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = (("summary", "Summary"), ("data", "Data and captions"), ("explained", "Explained share"),
            ("differences", "Ranked differences"), ("objects", "Object statistics"), ("topics", "Topics and words"),
            ("bias-table", "Bias table"), ("confusion", "Confusion matrices and examples"),
            ("themes", "Appendix A: untested LLM text"), ("models", "Appendix B: diagnostics"))
#: the stage whose result fills a section
SECTION_STAGE = {"objects": "objects", "topics": "language", "themes": "themes", "differences": "differences",
                 "explained": "explained"}
MAX_ROWS = 60  # rows of a generic table before "... N more"
MAX_FINDINGS = 7  # traits per dataset in the summary
EVIDENCE_SHOWN = 4  # thumbnails per trait in the summary
SUMMARY_SCHEMA = "describe.summary/1"
TEMPLATE = "report.html.j2"
#: what follows from each captioner for the traits (a captioner not named here: its own ``about``, else nothing)
CAPTIONER_ABOUT = {
    "planted_scene": "the planted generator's ground truth, so the words name exactly what was drawn",
    "tags": "the names of the packaged classifiers' confident classes (ImageNet; LVIS/ADE20K where their outputs "
            "exist), so a trait can only name what those classes cover",
    "model": "sentences written by an image-to-text model, so a trait can name anything the model says, and "
             "inherits its mistakes",
    "unknown": "not recorded, so what the words can name is unknown",
}
#: the words of a hypothesis template ("images that contain", "a photo with a") that are not its content
_TEMPLATE_PREFIX = re.compile(r"^(?:(?:an?|the)\s+)?(?:images?|photos?|pictures?)\s+(?:(?:that|which)\s+)?"
                              r"(?:contains?|shows?|with|of|has|have|depicts?|featuring)\s+", re.IGNORECASE)
_STOP = frozenset("a an the of with and or in on at to for by from that which this these those is are be some "
                  "many".split())

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
.thumbs{display:flex;flex-wrap:wrap;gap:6px;margin:4px 0 10px}.thumbs figure{margin:0}.card{border:1px solid #dde2ea;
border-radius:6px;padding:8px 12px;margin:8px 0;background:#fcfdff}.theme-title{font-weight:600}
.lead{font-size:.95em}.dataset{border-left:4px solid #2f5d9a;padding:2px 12px;margin:12px 0}
ol.findings{margin:4px 0;padding-left:22px}ol.findings li{margin:3px 0}.trait{font-weight:600}
.finding{display:flex;flex-wrap:wrap;align-items:center;gap:4px 10px}.finding .thumbs{margin:0;gap:3px}
.finding img.thumb{width:48px;height:48px;object-fit:cover}
.effect{color:#0a6b2f}pre.cmd{background:#f2f4f7;padding:6px 10px;overflow-x:auto;white-space:pre-wrap}
details{margin:6px 0}summary{cursor:pointer;color:#2f5d9a}
"""


def esc(value: Any) -> str:
    """Any value as escaped HTML text, as the template writes it (None as an empty string, floats to 4
    significant digits)."""
    from markupsafe import escape

    if value is None:
        return ""
    return str(escape(_num(value) if isinstance(value, float) else str(value)))


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
        return str(x)


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool) \
        and math.isfinite(float(x)) else None


# --- blocks: the plain data the template renders (render_blocks) ------------------------------------------

def para(text: Any, cls: str | None = None, strong: bool = False) -> dict[str, Any]:
    return {"kind": "p", "text": str(text), "cls": cls, "strong": strong}


def missing(reason: str) -> dict[str, Any]:
    return {"kind": "missing", "text": str(reason)}


def heading(text: Any, level: int = 3) -> dict[str, Any]:
    return {"kind": f"h{level}", "text": str(text)}


def details(summary: str, body: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": "details", "summary": summary, "body": body}


def _cell(value: Any) -> dict[str, Any]:
    if isinstance(value, (bool, np.bool_)):
        return {"v": "yes" if value else "no"}
    if isinstance(value, (int, float, np.integer, np.floating)):
        return {"v": _num(value), "num": True}
    if isinstance(value, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in value):
        return {"v": ", ".join(_num(v) for v in value)}
    if isinstance(value, (Mapping, list, tuple)):
        return {"v": json.dumps(value, default=str)[:300], "code": True}
    return {"v": "" if value is None else str(value)}


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
          headers: Sequence[str] | None = None, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Rows of dicts as a table block (columns: the given ones, else every key in first-seen order)."""
    rows = list(rows)
    if not rows:
        return para("(no rows)", "note")
    if columns is None:
        columns = list(dict.fromkeys(k for r in rows for k in r))
    heads = [str(h) for h in (headers or columns)]
    return {"kind": "table", "head": heads if any(heads) else [],
            "rows": [[_cell(r.get(c)) for c in columns] for r in rows[:max_rows]],
            "more": max(0, len(rows) - max_rows)}


def generic(value: Any, depth: int = 0) -> list[dict[str, Any]]:
    """Any JSON value as blocks: tables for lists of dicts and flat dicts, nested headings otherwise."""
    if isinstance(value, Mapping):
        if not value:
            return [para("(empty)", "note")]
        if all(not isinstance(v, (Mapping, list, tuple)) or _flat_list(v) for v in value.values()):
            return [table([{"key": k, "value": v} for k, v in value.items()], ["key", "value"], ["", ""])]
        out = []
        for k, v in value.items():
            out += [heading(k, 4 if depth else 3), *generic(v, depth + 1)]
        return out
    if isinstance(value, (list, tuple)):
        if value and all(isinstance(v, Mapping) for v in value):
            return [table(value)]
        return [para(", ".join(_num(v) for v in value) or "(empty)")]
    return [para(_num(value))]


def _flat_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(not isinstance(x, (Mapping, list, tuple)) for x in v)


# --- images ---------------------------------------------------------------------------------------------

def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def img(png: bytes, alt: str, cls: str = "fig", caption: str | None = None) -> dict[str, Any]:
    return {"kind": "img", "src": data_uri(png), "alt": str(alt), "cls": cls, "caption": caption}


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
    """Holds the report's data while the sections are built; collects the images it could not show."""

    def __init__(self, report: Mapping[str, Any]) -> None:
        self.r = report
        self.base = Path(str(report.get("base_dir") or "."))
        self.images: dict[str, str] = dict(report.get("images") or {})
        self.thumb_size = int((report.get("options") or {}).get("thumb_size", 96))
        self.unshown: list[dict[str, str]] = []
        self._thumbs: dict[tuple[str, str | None], dict[str, Any]] = {}

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

    def image(self, ref: Any, alt: str, caption: str | None = None) -> dict[str, Any]:
        png = self.png_of(ref)
        if png is None:
            return missing(f"{alt}: no image ({ref})")
        return img(png, alt, caption=caption)

    def thumb(self, sample: str, caption: str | None = None) -> dict[str, Any]:
        """A thumbnail of a sample (its id, looked up in `images`, or a readable path): {src, alt, cls, caption},
        or {name} when it cannot be read (listed in `unshown` once)."""
        key = (str(sample), caption)
        if key not in self._thumbs:
            path = self.images.get(str(sample), str(sample))
            try:
                self._thumbs[key] = img(thumbnail_png(path, self.thumb_size), str(sample), "thumb", caption)
            except Exception as err:  # noqa: BLE001 - any unreadable image is listed, never fatal to the report
                self.unshown.append({"item": str(sample), "reason": f"image not readable: {type(err).__name__}: "
                                                                     f"{err}"})
                self._thumbs[key] = {"name": Path(str(sample)).name}
        return self._thumbs[key]

    def thumbs(self, samples: Sequence[str], captions: Sequence[str | None] | None = None) -> dict[str, Any]:
        caps = list(captions) if captions is not None else [None] * len(samples)
        return {"kind": "thumbs", "shown": [self.thumb(s, c) for s, c in zip(samples, caps)]}


def _stage_missing(b: Builder, section: str) -> list[dict[str, Any]]:
    stage = SECTION_STAGE[section]
    st = (b.r.get("status") or {}).get(stage) or {}
    state = st.get("status", "not run")
    reason = st.get("reason") or "no result was written"
    return [missing(f"Stage {stage!r}: {state}. {reason}")]


#: keys of a stage dict that are diagnostics (appendix B), not content
DIAGNOSTIC_KEYS = {"models", "model", "ledger", "failed", "skipped", "table_files", "cache_use", "files", "seed",
                   "procedure", "per_dataset", "proposers", "similarity", "rules", "figures", "split",
                   "image_classifier", "objects_without_output", "captions_per_dataset", "top_classes"}


def _others(name: str, result: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """The keys of a stage dict that its section does not show (appendix B's "other results")."""
    return {k: v for k, v in result.items() if k not in known and k != "tables"}


# --- the summary ----------------------------------------------------------------------------------------

def phrase(text: str) -> str:
    """A hypothesis as a short phrase: its template words ("images that contain", "a photo with") dropped."""
    short = _TEMPLATE_PREFIX.sub("", " ".join(str(text).split())).strip()
    return short or str(text)


def content_words(text: str) -> frozenset[str]:
    """The content words of a phrase (lower case, no template or stop words, a plural "s" dropped): two traits
    whose sets are equal, or one inside the other, are near-duplicates in the summary."""
    words = re.findall(r"[a-z0-9]+", phrase(text).lower())
    return frozenset(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w
                     for w in words if w not in _STOP)


def _q_text(q: float | None) -> str:
    if q is None:
        return "n/a"
    return f"{q:.1e}" if q < 0.001 else f"{q:.3f}"


def dataset_findings(hypotheses: Sequence[Mapping[str, Any]], dataset: str, alpha: float,
                     limit: int = MAX_FINDINGS) -> list[dict[str, Any]]:
    """One dataset's summary traits: its tested hypotheses with q < alpha and AUROC > 0.5 that the differences
    stage marks a ``finding`` (where it says), by AUROC (then q),
    near-duplicates (`content_words`) folded into the stronger one, at most `limit`."""
    chosen = []
    for h in hypotheses:
        auroc, q = _float(h.get("auroc")), _float(h.get("q"))
        if h.get("dataset") != dataset or auroc is None or q is None or q >= alpha or auroc <= 0.5:
            continue
        if h.get("finding") is False:  # the stage's own rule: proposed for this dataset, more common in it
            continue
        chosen.append((auroc, q, h))
    chosen.sort(key=lambda t: (-t[0], t[1]))
    out: list[dict[str, Any]] = []
    keys: list[frozenset[str]] = []
    for auroc, q, h in chosen:
        key = content_words(str(h.get("text")))
        twin = next((i for i, k in enumerate(keys) if key and k and (key <= k or k <= key)), None)
        if twin is not None:
            if phrase(str(h.get("text"))) not in out[twin]["merged"]:
                out[twin]["merged"].append(phrase(str(h.get("text"))))
            continue
        if len(out) >= limit:
            continue
        ev = h.get("evidence") or {}
        images = ev.get("images") or ev.get("top_images") or []
        keys.append(key)
        out.append({"text": phrase(str(h.get("text"))), "hypothesis": str(h.get("text")), "auroc": auroc,
                    "share_in": _float(h.get("share_in")), "share_out": _float(h.get("share_out")), "q": q,
                    "proposer": str(h.get("proposer") or "unknown"),
                    "evidence": [str(s) for s in images[:EVIDENCE_SHOWN]],
                    "merged": [m for m in dict.fromkeys(phrase(str(m)) for m in ev.get("merged") or [])
                               if m != phrase(str(h.get("text")))]})
    return out


def _recalls(confusion: Any, datasets: Sequence[str]) -> dict[str, float]:
    cm = np.asarray(confusion or [], dtype=float)
    if cm.ndim != 2 or cm.shape[0] != len(datasets):
        return {}
    return {d: float(cm[i, i] / cm[i].sum()) for i, d in enumerate(datasets) if cm[i].sum() > 0}


def captioner_of(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Who wrote the captions, read defensively from the inputs' caption source ("unknown" when absent)."""
    src = inputs.get("caption_source") if isinstance(inputs.get("caption_source"), Mapping) else {}
    name = str(src.get("captioner") or "unknown")
    about = src.get("about") or src.get("implication") or src.get("note") or CAPTIONER_ABOUT.get(name, "")
    return {"name": name, "transform": src.get("transform"), "model": src.get("model"),
            "about": str(about).strip().rstrip(".")}  # the page and summary end the sentence


def explained_summary(report: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's ``explained``: the explained stage's sentence and shares, or why there is none and the
    command that gives the missing classify run."""
    res = (report.get("stages") or {}).get("explained")
    command = report.get("classify_command")
    if not isinstance(res, Mapping) or not res:
        st = (report.get("status") or {}).get("explained") or {}
        reason = st.get("reason") or "no result was written"
        no_run = not report.get("classify_runs")
        return {"status": "not run", "sentence": f"The explained-share stage did not run ({st.get('status', 'not run')}:"
                f" {reason}).", "share": None, "objects_share": None, "image_accuracy": None,
                "command": command if no_run else None}
    hyp = res.get("hypotheses") if isinstance(res.get("hypotheses"), Mapping) else {}
    obj = res.get("objects") if isinstance(res.get("objects"), Mapping) else {}
    image = _float(res.get("image_accuracy"))
    return {"status": "done" if image is not None else "missing", "sentence": str(res.get("sentence") or ""),
            "share": _float(hyp.get("share")), "objects_share": _float(obj.get("share")), "image_accuracy": image,
            "command": None if image is not None else command}


def summarize(report: Mapping[str, Any]) -> dict[str, Any]:
    """The summary (summary.json; the module docstring gives its schema) of a report's plain data."""
    inputs = report.get("inputs") or {}
    diff = (report.get("stages") or {}).get("differences") or {}
    hyps = list(diff.get("hypotheses") or []) if isinstance(diff, Mapping) else []
    alpha = _float((diff.get("similarity") or {}).get("alpha") if isinstance(diff, Mapping) else None) or 0.05
    per = inputs.get("per_dataset") or {}
    names = list(inputs.get("datasets") or []) or list(dict.fromkeys(str(h.get("dataset")) for h in hyps))
    table_rows = (report.get("bias_table") or {}).get("rows") or []
    diff_state = ((report.get("status") or {}).get("differences") or {})
    datasets = {}
    for name in names:
        counts = per.get(name) or {}
        findings = dataset_findings(hyps, name, alpha)
        if findings:
            why = None
        elif not hyps:
            why = (f"No trait was tested: the differences stage {diff_state.get('status', 'did not run')}"
                   f"{': ' + str(diff_state['reason']) if diff_state.get('reason') else ''}.")
        else:
            why = f"No trait of {name} tested significant (q < {alpha:g} with AUROC above 0.5)."
        bias = [{"label": str(r.get("label")), "recall": float(r["per_dataset"][name])}
                for r in table_rows if isinstance(r.get("per_dataset"), Mapping)
                and _float(r["per_dataset"].get(name)) is not None]
        datasets[name] = {"n_images": int(counts.get("images") or 0), "n_scored": int(counts.get("score") or 0),
                          "findings": findings, "none_reason": why, "bias_table": bias}
    return {"schema": SUMMARY_SCHEMA, "title": str(report.get("title") or "Dataset description"), "alpha": alpha,
            "captioner": captioner_of(inputs),
            "sample": {"n_images": int(inputs.get("n_images") or sum(int((v or {}).get("images") or 0)
                                                                     for v in per.values())),
                       "per_dataset": {n: {k: int((per.get(n) or {}).get(k) or 0) for k in ("images", "propose",
                                                                                            "score")}
                                       for n in names},
                       "rule": str((inputs.get("sample") or {}).get("rule") or ""),
                       "available": {n: int(v) for n, v in ((inputs.get("sample") or {}).get("available") or {}).items()
                                     if isinstance(v, (int, float))}},
            "datasets": datasets, "explained": explained_summary(report)}


#: the keys and types of summary.json (`check_summary`)
_SUMMARY_KEYS = {"schema": str, "title": str, "alpha": float, "captioner": dict, "sample": dict, "datasets": dict,
                 "explained": dict}
_FINDING_KEYS = {"text": str, "hypothesis": str, "auroc": float, "share_in": (float, type(None)),
                 "share_out": (float, type(None)), "q": float, "proposer": str, "evidence": list, "merged": list}
_EXPLAINED_KEYS = {"status": str, "sentence": str, "share": (float, type(None)), "objects_share": (float, type(None)),
                   "image_accuracy": (float, type(None)), "command": (str, type(None))}


def check_summary(summary: Mapping[str, Any]) -> None:
    """Raises ValueError naming the first key of a summary that does not follow the schema (module docstring)."""
    def need(obj: Any, keys: Mapping[str, Any], where: str) -> None:
        if not isinstance(obj, Mapping):
            raise ValueError(f"summary.json: {where} is not an object")
        for key, kind in keys.items():
            if key not in obj:
                raise ValueError(f"summary.json: {where}.{key} is missing")
            value = obj[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if not isinstance(value, kind):
                raise ValueError(f"summary.json: {where}.{key} is {type(value).__name__}, not {kind}")

    need(summary, _SUMMARY_KEYS, "summary")
    if summary["schema"] != SUMMARY_SCHEMA:
        raise ValueError(f"summary.json: schema {summary['schema']!r}, expected {SUMMARY_SCHEMA!r}")
    need(summary["captioner"], {"name": str, "about": str}, "captioner")
    need(summary["explained"], _EXPLAINED_KEYS, "explained")
    for name, d in summary["datasets"].items():
        need(d, {"n_images": int, "n_scored": int, "findings": list, "bias_table": list}, f"datasets.{name}")
        aurocs = []
        for i, f in enumerate(d["findings"]):
            need(f, _FINDING_KEYS, f"datasets.{name}.findings[{i}]")
            if not (f["q"] < summary["alpha"] and f["auroc"] > 0.5):
                raise ValueError(f"summary.json: datasets.{name}.findings[{i}] is not significant")
            aurocs.append(f["auroc"])
        if aurocs != sorted(aurocs, reverse=True) or len(aurocs) > MAX_FINDINGS:
            raise ValueError(f"summary.json: datasets.{name}.findings are not the top {MAX_FINDINGS} by AUROC")


def write_summary(report: Mapping[str, Any], path: str | Path) -> Path:
    """`summarize` checked (`check_summary`) and written atomically as JSON to `path`."""
    from bias.core.io import write_json

    summary = summarize(report)
    check_summary(summary)
    write_json(summary, Path(path))
    return Path(path)


# --- sections -------------------------------------------------------------------------------------------

def section_data(b: Builder) -> list[dict[str, Any]]:
    inputs = b.r.get("inputs")
    if not inputs:
        return [missing("No inputs were recorded.")]
    rows = [{"dataset": k, **v} for k, v in (inputs.get("per_dataset") or {}).items()]
    src = inputs.get("caption_source") or {}
    cap = captioner_of(inputs)
    text = (f"{_num(inputs.get('n_images'))} images of {len(inputs.get('datasets') or [])} datasets; captions from "
            f"{src.get('transform') or 'unknown'} (captioner {cap['name']}{': ' + cap['about'] if cap['about'] else ''});"
            f" propose share {_num(inputs.get('propose_fraction'))}, roles drawn with seed {_num(inputs.get('seed'))}; "
            f"{'planted scene records used' if inputs.get('records') else 'no scene records (not planted data)'}.")
    n_missing = int(inputs.get("n_missing_captions") or 0)
    note = (f"{n_missing} images have no caption; they are listed in appendix B." if n_missing else
            "Every image has a caption.")
    return [para(text), table(rows), para(note)]


def section_bias_table(b: Builder) -> list[dict[str, Any]]:
    t = b.r.get("bias_table")
    if not t:
        why = b.r.get("bias_table_missing") or "no bias table on this data was found"
        return [missing(f"No bias table: {why}.")]
    rows = []
    for r in t.get("rows") or []:
        ci = r.get("ci95") or [None, None]
        rows.append({"transform": r.get("label"), "family": r.get("family"), "accuracy": _pct(r.get("mean")),
                     "std": _pct(r.get("std")), "95% CI": f"{_pct(ci[0])}-{_pct(ci[1])}",
                     "chance": _pct(r.get("chance")), "seeds": len(r.get("accuracies") or []),
                     **{f"recall {d}": _pct(v) for d, v in (r.get("per_dataset") or {}).items()}})
    out = [para(f"From {t.get('path')}", "note"), table(rows)]
    if t.get("figure"):
        out.append(b.image(t["figure"], "bias table figure"))
    for ex in t.get("examples") or []:
        out.append(b.image(ex, "transformed examples", Path(str(ex)).stem))
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


def section_confusion(b: Builder) -> list[dict[str, Any]]:
    runs = b.r.get("classify_runs") or []
    if not runs:
        why = b.r.get("classify_runs_missing") or "no classify run on this data was found"
        return [missing(f"No confusion matrices: {why}.")]
    out = []
    for run in runs:
        title = " / ".join(str(run.get(k)) for k in ("transform", "model", "recipe") if run.get(k)) + \
            f" / seed {run.get('seed')}"
        ci = run.get("ci95") or [None, None]
        acc = f"accuracy {_pct(run.get('accuracy'))} (95% CI {_pct(ci[0])}-{_pct(ci[1])}), chance {_pct(run.get('chance'))}"
        png = _confusion_png(run, b)
        body = [para(acc), para(run.get("run_dir"), "note"),
                img(png, f"confusion {title}") if png else missing("no confusion matrix")]
        for dataset, ex in (run.get("examples") or {}).items():
            samples = list(ex.get("correct") or []) + [w["path"] for w in ex.get("wrong") or []]
            captions = ["correct"] * len(ex.get("correct") or []) + [f"predicted {w.get('predicted')}"
                                                                     for w in ex.get("wrong") or []]
            if samples:
                body += [heading(dataset, 4), b.thumbs(samples, captions)]
        out.append({"kind": "card", "title": title, "body": body})
    return out


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


OBJECTS_SHOWN = {"sources", "share", "unique_per_image", "ranking", "top_classes"}


def section_objects(b: Builder) -> list[dict[str, Any]]:
    res = b.stage("objects")
    if res is None:
        return _stage_missing(b, "objects")
    out = []
    sources = res.get("sources") or {}
    if sources:
        rows = [{"source": k, **{f: v for f, v in (v if isinstance(v, Mapping) else {"status": v}).items()
                                 if f != "model"}} for k, v in sources.items()]
        out += [heading("Sources"), table(rows)]
    top = int(res.get("top_classes") or 15)
    for source, share in (res.get("share") or {}).items():
        png = _share_figure(share, source, top)
        out += [heading(f"Share of images per class: {source}"),
                img(png, f"class shares {source}") if png else missing("no classes")]
    for source, counts in (res.get("unique_per_image") or {}).items():
        png = _box_figure(counts, source)
        out += [heading(f"Unique classes per image: {source}"),
                img(png, f"unique classes {source}") if png else missing("no counts")]
    for source, per in (res.get("ranking") or {}).items():
        part = []
        for dataset, rows in per.items():
            shown = [{"class": r.get("class"), "coef": r.get("coef"),
                      "95% CI": "-".join(_num(x) for x in (r.get("ci95") or [])), **{k: v for k, v in r.items()
                      if k not in ("class", "coef", "ci95")}} for r in rows[:top]]
            part += [heading(dataset, 4), table(shown)]
        out.append(details(f"Most distinctive classes (one-vs-rest logistic regression): {source}", part))
    return out


LANGUAGE_SHOWN = {"topics", "wordclouds", "distinctive"}


def section_topics(b: Builder) -> list[dict[str, Any]]:
    res = b.stage("language")
    if res is None:
        return _stage_missing(b, "topics")
    out = []
    clouds = res.get("wordclouds") or {}
    if clouds:
        out += [heading("Word clouds"), *[b.image(ref, f"word cloud {d}", d) for d, ref in clouds.items()]]
    for dataset, words in (res.get("distinctive") or {}).items():
        out.append(details(f"Distinctive words (log-odds, informative Dirichlet prior): {dataset}", [table(words)]))
    for dataset, topics in (res.get("topics") or {}).items():
        rows = []
        for i, t in enumerate(topics):
            words = t.get("words") if isinstance(t, Mapping) else t
            rows.append({"topic": i + 1, "words": ", ".join(str(w) for w in words or [])})
        out.append(details(f"LDA topics: {dataset}", [table(rows)]))
    return out or [missing("The language stage wrote no topics, word clouds or words.")]


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


THEMES_SHOWN = {"themes"}


def section_themes(b: Builder) -> list[dict[str, Any]]:
    res = b.stage("themes")
    if res is None:
        return _stage_missing(b, "themes")
    out = [para("Themes written by the LLM from the captions of the propose images. They were not tested against "
                "the images, so they are not findings: a tested LLM hypothesis that passed appears in the summary.",
                "note")]
    for dataset, themes in (res.get("themes") or {}).items():
        cards = []
        for t in themes:
            if not isinstance(t, Mapping):
                t = {"title": t}
            body = t.get("description") or t.get("summary") or t.get("text") or ""
            cards.append({"kind": "theme", "title": str(t.get("title") or ""), "note": "; ".join(theme_marks(t)),
                          "text": str(body)})
        out += [heading(dataset), *(cards or [missing("no theme parsed for this dataset")])]
    return out


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


DIFFERENCES_SHOWN = {"hypotheses", "effect_matrix"}


def _share_text(h: Mapping[str, Any]) -> str:
    s_in, s_out = _float(h.get("share_in")), _float(h.get("share_out"))
    return "" if s_in is None or s_out is None else f"{100 * s_in:.0f}% vs {100 * s_out:.0f}%"


def section_differences(b: Builder) -> list[dict[str, Any]]:
    res = b.stage("differences")
    if res is None:
        return _stage_missing(b, "differences")
    hyps = list(res.get("hypotheses") or [])
    if not hyps:
        return [missing("No hypothesis was proposed and scored.")]
    hyps.sort(key=lambda h: (not h.get("significant"), -(_float(h.get("auroc")) or 0)))
    rows = [{"rank": i + 1, "dataset": h.get("dataset"), "hypothesis": h.get("text"), "proposer": h.get("proposer"),
             "AUROC": h.get("auroc"), "images (dataset vs rest)": _share_text(h), "p": h.get("p"), "q": h.get("q"),
             "significant": bool(h.get("significant"))} for i, h in enumerate(hyps)]
    sig = [r for r in rows if r["significant"]]
    out = [para(f"Every hypothesis below was tested: {len(hyps)} scored, {len(sig)} significant. The summary shows "
                "each dataset's strongest significant traits with their evidence.", "note")]
    out += [heading("Ranked hypotheses (significant)"),
            table(sig) if sig else missing("No hypothesis tested significant.")]
    out.append(details(f"All {len(rows)} tested hypotheses, with their evidence", [table(rows), *[
        {"kind": "card", "title": f"{h.get('dataset')}: {h.get('text')}",
         "mark": "significant" if h.get("significant") else "n.s.", "mark_cls": "sig" if h.get("significant") else "ns",
         "note": f"AUROC {_num(h.get('auroc'))}, q {_num(h.get('q'))}",
         "body": _evidence_blocks(b, h.get("evidence") or {})} for h in hyps[:MAX_ROWS]]]))
    if res.get("effect_matrix"):
        png = _effect_figure(res["effect_matrix"])
        out.append(details("Effect matrix (dataset x hypothesis)", [
            img(png, "effect matrix") if png else missing("effect matrix has no values")]))
    return out


def _evidence_blocks(b: Builder, ev: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    images = ev.get("images") or ev.get("top_images") or []
    if images:
        out.append(b.thumbs([str(s) for s in images]))
    if ev.get("words"):
        out.append(para("words: " + ", ".join(w.get("word", str(w)) if isinstance(w, Mapping) else str(w)
                                              for w in ev["words"])))
    if ev.get("objects"):
        out += [para("objects:"), table(ev["objects"])]
    return out


EXPLAINED_SHOWN = {"sentence", "chance", "image_accuracy", "hypotheses", "objects"}


def section_explained(b: Builder) -> list[dict[str, Any]]:
    res = b.stage("explained")
    if res is None:
        return _stage_missing(b, "explained")
    bars = {"chance": res.get("chance"), "image classifier": res.get("image_accuracy"),
            "top-k hypotheses": (res.get("hypotheses") or {}).get("accuracy")
            if isinstance(res.get("hypotheses"), Mapping) else res.get("hypotheses"),
            "object presence": (res.get("objects") or {}).get("accuracy")
            if isinstance(res.get("objects"), Mapping) else res.get("objects")}
    bars = {k: float(v) for k, v in bars.items() if isinstance(v, (int, float))}
    out = [para(res["sentence"], strong=True)] if res.get("sentence") else []
    if bars:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 2.6))
        ax.barh(list(bars), [100 * v for v in bars.values()], color=["0.6", "tab:blue", "tab:green", "tab:orange"]
                [:len(bars)])
        ax.set_xlim(0, 100)
        ax.set_xlabel("dataset classification accuracy (%)")
        for i, v in enumerate(bars.values()):
            ax.text(100 * v + 1, i, f"{100 * v:.1f}", va="center", fontsize=8)
        out.append(img(figure_png(fig), "explained share"))
    return out


SHOWN = {"objects": OBJECTS_SHOWN, "language": LANGUAGE_SHOWN, "themes": THEMES_SHOWN,
         "differences": DIFFERENCES_SHOWN, "explained": EXPLAINED_SHOWN}


def _ledgers(b: Builder) -> dict[str, Any]:
    found = {}
    for name, res in (b.r.get("stages") or {}).items():
        if isinstance(res, Mapping):
            for key in ("ledger", "token_ledger", "tokens"):
                if res.get(key):
                    found[name] = res[key]
    return found


def section_models(b: Builder) -> list[dict[str, Any]]:
    """Appendix B: everything a reader needs only to check or reproduce the run (collapsed)."""
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
    out += [heading("Models"), table(models) if models else missing("No model identities were recorded.")]
    versions = b.r.get("versions") or {}
    if versions:
        out += [heading("Package versions"), *generic(versions, 1)]
    ledgers = _ledgers(b)
    out += [heading("Token ledger"), *(generic(ledgers, 1) if ledgers else
                                       [missing("No token ledger: no stage that calls an LLM wrote one.")])]
    status = b.r.get("status") or {}
    times = b.r.get("times") or {}
    rows = [{"stage": n, "status": s.get("status"), "reason": s.get("reason"), "seconds": times.get(n)}
            for n, s in status.items()]
    rows += [{"stage": n, "status": "", "reason": "", "seconds": t} for n, t in times.items() if n not in status]
    out += [heading("Stages and wall times"), table(rows)]
    cache = {n: r["cache_use"] for n, r in (b.r.get("stages") or {}).items()
             if isinstance(r, Mapping) and r.get("cache_use")}
    if cache:
        out += [heading("Cache use"), *generic(cache, 1)]
    for name, res in (b.r.get("stages") or {}).items():
        if isinstance(res, Mapping):
            rest = _others(name, res, SHOWN.get(name, set()) | {"ledger", "cache_use", "failed", "skipped", "models",
                                                               "model"})
            if rest:
                out += [heading(f"Other results: {name}"), *generic(rest, 1)]
    for name, res in (b.r.get("stages") or {}).items():
        failed = res.get("failed") if isinstance(res, Mapping) else None
        if failed:
            rows = [f if isinstance(f, Mapping) else {"reason": f} for f in failed]
            out += [heading(f"Failed generations and steps: {name} ({len(rows)}; never shown as content)"),
                    table(rows)]
    out += [heading("Skipped items"), *_skipped(b)]
    return out


def _skipped(b: Builder) -> list[dict[str, Any]]:
    rows = []
    inputs = b.r.get("inputs") or {}
    for m in inputs.get("missing_captions") or []:
        rows.append({"where": "captions", "item": m.get("sample_id"), "reason": m.get("reason")})
    for f in (inputs.get("caption_source") or {}).get("unusable_files") or []:
        rows.append({"where": "data", "item": f.get("path"), "reason": f.get("reason")})
    for name, res in (b.r.get("stages") or {}).items():
        if isinstance(res, Mapping):
            for key in ("skipped",):
                for f in res.get(key) or []:
                    item = f if isinstance(f, Mapping) else {"reason": f}
                    rows.append({"where": f"{name} ({key})", "item": item.get("item") or item.get("sample_id") or
                                 item.get("path") or item.get("dataset") or "", "reason": item.get("reason") or
                                 json.dumps(item, default=str)[:200]})
    rows += [{"where": "report", **u} for u in b.unshown]
    return [table(rows)] if rows else [para("None: every item was used.")]


RENDER = {"data": section_data, "bias-table": section_bias_table, "confusion": section_confusion,
          "objects": section_objects, "topics": section_topics, "themes": section_themes,
          "differences": section_differences, "explained": section_explained, "models": section_models}
#: sections shown collapsed (<details>) with this line
COLLAPSED = {"models": "Models, versions, token ledger, stage times, cache use, failed calls and other results"}


@lru_cache(maxsize=1)
def _environment() -> Any:
    from jinja2 import Environment, PackageLoader, select_autoescape

    return Environment(loader=PackageLoader("describe", "templates"), autoescape=select_autoescape(["html", "j2"]),
                       keep_trailing_newline=True)


def build_report(report: Mapping[str, Any]) -> str:
    """The HTML of the whole report (see the module docstring for the keys of `report`)."""
    b = Builder(report)
    title = str(report.get("title") or "Dataset description")
    summary = summarize(report)
    thumbs = {sid: b.thumb(sid) for d in summary["datasets"].values() for f in d["findings"] for sid in f["evidence"]}
    for d in summary["datasets"].values():
        for f in d["findings"]:
            f["q_text"] = _q_text(f["q"])
    sample = summary["sample"]
    sizes = ", ".join(f"{n} {v['images']}" for n, v in sample["per_dataset"].items())
    available = ", ".join(f"{n} {v}" for n, v in sample.get("available", {}).items())
    summary["sample_sentence"] = (
        f"{sample['n_images']} images ({sizes}"
        + (f"; drawn from the usable images available: {available}" if available else "")
        + "); per dataset, half of the images proposed traits and the other half tested them."
        + (f" Sample: {sample['rule']}." if sample.get("rule") else "")) if sizes else "No inputs were recorded."
    summary["thumbs"] = thumbs
    bodies = {sid: RENDER[sid](b) for sid, _ in SECTIONS if sid not in ("summary", "models")}
    bodies["models"] = RENDER["models"](b)  # last: it lists what the other sections could not show
    sections = [{"id": sid, "title": head, "blocks": bodies[sid], "collapsed": COLLAPSED.get(sid)}
                for sid, head in SECTIONS if sid != "summary"]
    page = {"title": title, "subtitle": str(report.get("subtitle") or ""), "nav": SECTIONS, "summary": summary,
            "sections": sections}
    return _environment().get_template(TEMPLATE).render(page=page, css=CSS)


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
            rows = [{**r, "per_dataset": _per_dataset_recall(r.get("run_dirs") or [])} for r in rows]
            figure = path.parent / "table.png"
            examples = sorted((path.parent / "examples").glob("*.png"))
            return ({"path": str(path), "rows": rows, "figure": str(figure) if figure.exists() else None,
                     "examples": [str(e) for e in examples]}, "")
    why = (f"no table.json under {root} (run python scripts/table.py data={data['name']})" if not candidates else
           f"the {len(candidates)} table(s) under {root} were made on other data settings")
    return None, why


def _per_dataset_recall(run_dirs: Sequence[str]) -> dict[str, float]:
    """The mean over a bias-table row's runs of each dataset's val recall (`results.json` ``per_dataset``)."""
    found: dict[str, list[float]] = {}
    for d in run_dirs:
        try:
            per = json.loads((Path(d) / "results.json").read_text()).get("per_dataset") or {}
        except (OSError, ValueError):
            continue
        for name, value in per.items():
            if _float(value) is not None:
                found.setdefault(str(name), []).append(float(value))
    return {name: float(np.mean(v)) for name, v in found.items()}


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


def data_overrides() -> list[str]:
    """The ``data``/``data.*`` overrides of the running Hydra command line (empty outside a Hydra app)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        task = list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError):
        return []
    return [o for o in task if re.match(r"^[+~]{0,2}data(?:[.=])", o)]


def classify_command(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> str:
    """The command that runs the reference classification on the same data: the describe command's data
    overrides (else ``data=<name>``), quoted for a shell."""
    args = list(overrides) or [f"data={data['name']}"]
    return " ".join(["python scripts/classify.py", *(shlex.quote(a) for a in args), "transform=reference"])


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
            "classify_runs_missing": runs_why, "classify_command": classify_command(data, data_overrides()),
            "versions": package_versions()}
