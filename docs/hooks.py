"""mkdocs hooks (`hooks:` in mkdocs.yml): the pages that are generated, so that each fact has one source.

- `<!-- transforms-table -->` in a page becomes the table of every registered transform and
  `<!-- transforms-reference -->` one section per transform with its class docstring, both read from
  the registry (`transforms.list_transforms`, each class's kind, family, output, augmentation group,
  side outputs, `keeps`, `published` and docstring).
- The benchmark results (`benchmarks/RESULTS.md` and `benchmarks/results/*.md`) become pages of the site
  under the same relative paths, so their links work both on the site and in the repository; a docs page
  links them as `../benchmarks/...` (right in the repository) and is rewritten to `benchmarks/...`.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLE_MARK = "<!-- transforms-table -->"
REFERENCE_MARK = "<!-- transforms-reference -->"
BENCHMARKS = ("benchmarks/RESULTS.md", "benchmarks/results/*.md")
#: the table's order: the reference first, then from low-level to high-level information
FAMILY_ORDER = ("reference", "colour", "frequency", "spatial", "structural", "semantic")


def _cell(text: str) -> str:
    """One table cell: one line, `|` escaped outside code spans (inside them Python-Markdown keeps it)."""
    parts = " ".join(text.split()).split("`")
    return "`".join(p if i % 2 else p.replace("|", "\\|") for i, p in enumerate(parts)) or "-"


def _prose(doc: str) -> str:
    """A docstring as markdown: Sphinx roles (:func:`x`) as code, `*` shown as written outside code spans."""
    parts = re.sub(r":(?:func|meth|class|attr|mod):`", "`", doc).split("`")
    return "`".join(p if i % 2 else p.replace("*", "\\*") for i, p in enumerate(parts))


def _stage(cls: type) -> str:
    from transforms.base import ModelTransform

    if cls.kind == "online":
        stages = [s for s, on in (("image", cls.has_image_stage), ("tensor", cls.has_tensor_stage)) if on]
        return f"online ({', '.join(stages)})" if stages else "online"
    return "precomputed (model)" if issubclass(cls, ModelTransform) else "precomputed"


def _side_outputs(cls: type) -> str:
    sides = []
    for name, spec in cls.outputs.items():
        if name == "image":
            continue
        columns = f" ({', '.join(spec.columns)})" if spec.columns else ""
        sides.append(f"`{name}`: {spec.kind}{columns}")
    return "; ".join(sides)


def transform_rows() -> list[dict[str, str]]:
    """One row per registered transform, every field read from its class, ordered by family, then name."""
    import transforms

    classes = {name: transforms.get_transform_class(name) for name in transforms.list_transforms()}
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    rows = []
    for name, cls in sorted(classes.items(), key=lambda item: (rank.get(item[1].family, len(rank)), item[0])):
        doc = inspect.getdoc(cls) or ""
        rows.append({
            "name": name, "class": f"{cls.__module__}.{cls.__qualname__}", "kind": _stage(cls),
            "family": cls.family, "output": cls.output, "group": cls.augment_group,
            "side outputs": _side_outputs(cls), "keeps": cls.keeps, "published": cls.published, "doc": doc,
        })
    return rows


def transforms_table(rows: list[dict[str, str]]) -> str:
    columns = ("name", "kind", "family", "output", "group", "keeps", "published", "side outputs")
    header = "| " + " | ".join(("published parameters (ours where different)" if c == "published" else c)
                               for c in columns) + " |"
    lines = [header, "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"[`{row['name']}`](#{row['name']})"] + [_cell(row[c]) for c in columns[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def transforms_reference(rows: list[dict[str, str]]) -> str:
    parts = []
    for row in rows:
        parts.append(f"### {row['name']}\n\n`{row['class']}`: {row['kind']}, family "
                     f"{row['family']}, output {row['output']}, augmentation group {row['group']}.\n\n{_prose(row['doc'])}\n")
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if TABLE_MARK in markdown or REFERENCE_MARK in markdown:
        rows = transform_rows()
        markdown = markdown.replace(TABLE_MARK, transforms_table(rows))
        markdown = markdown.replace(REFERENCE_MARK, transforms_reference(rows))
    if not page.file.src_uri.startswith("benchmarks/"):
        markdown = markdown.replace("](../benchmarks/", "](benchmarks/")
    return markdown


def on_files(files, config):
    from mkdocs.structure.files import File

    for pattern in BENCHMARKS:
        for path in sorted(ROOT.glob(pattern)):
            src_uri = path.relative_to(ROOT).as_posix()
            files.append(File.generated(config, src_uri, abs_src_path=str(path)))
    return files

