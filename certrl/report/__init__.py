"""``certrl report``: self-contained HTML and PDF robustness reports from results files.

:func:`write_reports` reads results files (:mod:`certrl.results`), builds one
:class:`~certrl.report.document.Document` and renders it to every requested output; the format
follows the extension (``.html``/``.htm`` or ``.pdf``). Same inputs, same bytes: figures use
fixed SVG hash salts, the PDF has no creation date, and the only date shown is the newest
``updated`` of the inputs.
"""

from __future__ import annotations

from pathlib import Path

from certrl.results import ResultsError

FORMATS = {".html": "html", ".htm": "html", ".pdf": "pdf"}

__all__ = ["FORMATS", "build", "check_requirements", "output_format", "parse_requirements",
           "render", "write_reports"]


def output_format(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ResultsError(f"{path}: unknown report format {ext or '(no extension)'!r}; "
                           "use -o report.html or -o report.pdf")
    return FORMATS[ext]


def build(paths: list[str | Path], requirements: list[str] | None = None):  # -> Document
    """The report document of ``paths``; ``requirements`` (``certrl gate`` syntax, e.g.
    ``"certified_return@B=0.1 >= 2500"``) are checked in every file and shown in its verdict.
    A malformed requirement raises :class:`ValueError`."""
    from certrl.report.document import build_document
    from certrl.report.model import load_inputs

    reqs = parse_requirements(requirements or [])
    items = load_inputs(paths)
    for it in items:
        it.gate_checks = check_requirements(reqs, it.data, str(it.path))
    return build_document(items)


def parse_requirements(texts: list[str]) -> list:  # -> list[certrl.gate.Requirement]
    from certrl.gate import parse_requirement

    return [parse_requirement(t) for t in texts]


def check_requirements(reqs: list, data: dict, file: str) -> list:  # -> list[certrl.gate.Check]
    """Every requirement on one loaded results file, as :func:`certrl.gate.evaluate` checks
    it: ``pass``/``fail`` on the lower confidence bound, ``error`` when the file lacks the
    metric (a gate that cannot be evaluated is not a pass)."""
    from certrl.gate import Check, GateConfigError, resolve_metric

    out = []
    for req in reqs:
        try:
            mv = resolve_metric(data, req)
        except GateConfigError as e:
            out.append(Check(req, file, "error", error=str(e)))
            continue
        out.append(Check(req, file, "pass" if req.holds(mv.value) else "fail", mv.value,
                         mv.kind, mv.source, mv.note))
    return out


def render(doc, fmt: str) -> bytes:  # doc: Document
    """The report as bytes in ``fmt`` (``"html"`` or ``"pdf"``)."""
    if fmt == "html":
        from certrl.report.html import render_html

        return render_html(doc).encode("utf-8")
    from certrl.report.pdf import render_pdf

    return render_pdf(doc)


def _write(path: Path, data: bytes) -> None:
    import contextlib
    import os
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_output(path: str | Path) -> Path:
    """Validate an output path before any work: known extension, writable directory."""
    import os

    p = Path(path)
    output_format(p)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ResultsError(f"{p}: directory {parent} does not exist; create it or pick another "
                           "-o path")
    if not os.access(parent, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ResultsError(f"{p}: not writable; pick another -o path")
    if p.is_dir():
        raise ResultsError(f"{p}: is a directory; give a file name ending in .html or .pdf")
    return p


def write_reports(inputs: list[str | Path], outputs: list[str | Path],
                  requirements: list[str] | None = None) -> list[Path]:
    """Render the report of ``inputs`` to every path in ``outputs`` (atomic writes), with the
    gate ``requirements`` checked in every verdict."""
    outs = [check_output(o) for o in outputs]
    if not outs:
        raise ResultsError("no output given: pass -o report.html and/or -o report.pdf")
    doc = build(list(inputs), requirements)
    for o in outs:
        try:
            _write(o, render(doc, output_format(o)))
        except OSError as e:
            raise ResultsError(f"{o}: cannot write the report ({e.strerror or e})") from None
    return outs
