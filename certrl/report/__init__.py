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

__all__ = ["FORMATS", "build", "output_format", "render", "write_reports"]


def output_format(path: str | Path) -> str:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ResultsError(f"{path}: unknown report format {ext or '(no extension)'!r}; "
                           "use -o report.html or -o report.pdf")
    return FORMATS[ext]


def build(paths: list[str | Path]):  # -> Document
    from certrl.report.document import build_document
    from certrl.report.model import load_inputs

    return build_document(load_inputs(paths))


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


def write_reports(inputs: list[str | Path], outputs: list[str | Path]) -> list[Path]:
    """Render the report of ``inputs`` to every path in ``outputs`` (atomic writes)."""
    outs = [check_output(o) for o in outputs]
    if not outs:
        raise ResultsError("no output given: pass -o report.html and/or -o report.pdf")
    doc = build(list(inputs))
    for o in outs:
        try:
            _write(o, render(doc, output_format(o)))
        except OSError as e:
            raise ResultsError(f"{o}: cannot write the report ({e.strerror or e})") from None
    return outs
