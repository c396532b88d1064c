"""Run report notebooks headless and export them as self-contained offline HTML.

* :func:`run_report`: papermill executes the notebook with parameters in a fresh
  kernel, then nbconvert writes HTML **without input cells** through the
  ``quantlab_offline`` template (the lab template minus every CDN script), so
  the file renders with no network: BokehJS is inline in the outputs. The
  notebook writes ``<out stem>.json`` beside the HTML (parameters, data hash,
  versions, headline figures); the runner adds its timings to it. A failing run
  keeps the executed notebook next to the output (``<out stem>.failed.ipynb``)
  and reports the failing cell's error in one line.
* :func:`run_batch`: one report per pair in parallel worker processes (each a
  ``quantlab report`` process, so kernels never share a parent), a progress
  line, and ``index.html`` with one sortable row per pair (errors included).
* :func:`start_report`: the same in a background process, for the live
  monitor's Report button; :meth:`ReportJob.poll` never blocks.

Works from inside a running notebook kernel (nbclient runs its own loop).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from quantlab.errors import ConfigError, QuantlabError
from quantlab.reports.parameters import validate_parameters

__all__ = ["run_report", "run_batch", "start_report", "ReportOutcome", "ReportJob",
           "notebook_path", "export_html", "parse_pairs", "pairs_from_scan"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
NOTEBOOKS = {"pair_report": "pair_report.ipynb", "pair_scan": "pair_scan.ipynb"}
#: Parameters that are paths: made absolute before the kernel (its cwd differs).
_PATH_PARAMS = ("db_path", "archive", "ledger_path", "summary_path")
#: Cells with this tag (e.g. instructions for notebook users) are left out of the HTML.
HIDE_TAG = "report-hide"


@dataclasses.dataclass(frozen=True)
class ReportOutcome:
    """What one report run produced.

    ``ok``: the notebook ran and the HTML was written. ``error``: the failing
    cell's error in one line (None when ok). ``exit_code``: 0 ok, 2 a data or
    parameter error (a :class:`~quantlab.errors.QuantlabError` in the kernel),
    1 anything else. ``notebook``: the executed notebook kept on failure.
    ``timings``: seconds (``kernel_start_s``, one entry per tagged cell,
    ``export_s``, ``total_s``).
    """

    ok: bool
    html: Path | None
    json: Path | None
    notebook: Path | None
    error: str | None
    exit_code: int
    timings: dict
    headline: dict | None = None


def notebook_path(name: str | os.PathLike) -> Path:
    """The report notebook called ``name`` (``pair_report``, ``pair_scan``) or a path.

    Looked up in ``QUANTLAB_NOTEBOOKS`` when set, else the project's ``notebooks/``.
    """
    p = Path(name)
    if p.suffix == ".ipynb":
        if not p.is_file():
            raise ConfigError("notebook", str(name), "an existing .ipynb file")
        return p
    if str(name) not in NOTEBOOKS:
        raise ConfigError("notebook", str(name), "one of " + ", ".join(NOTEBOOKS) + " or a .ipynb path")
    base = Path(os.environ.get("QUANTLAB_NOTEBOOKS") or Path(__file__).resolve().parents[2] / "notebooks")
    path = base / NOTEBOOKS[str(name)]
    if not path.is_file():
        raise ConfigError("notebook", str(path), "the project's notebooks/ folder (or set QUANTLAB_NOTEBOOKS)")
    return path


def _quantlab_error_names() -> set[str]:
    import quantlab.errors as errs

    names = {"QuantlabError"}
    pending = [errs.QuantlabError]
    while pending:
        cls = pending.pop()
        for sub in cls.__subclasses__():
            names.add(sub.__name__)
            pending.append(sub)
    return names


def _one_line(text: str, limit: int = 400) -> str:
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))  # IPython colours
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def export_html(executed: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Executed notebook -> offline HTML of its outputs and markdown (no input
cells; cells tagged :data:`HIDE_TAG` left out), written atomically."""
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor

    exporter = HTMLExporter(template_name="quantlab_offline", extra_template_basedirs=[str(TEMPLATES)],
                            exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    exporter.register_preprocessor(TagRemovePreprocessor(remove_cell_tags={HIDE_TAG}), enabled=True)
    body, _ = exporter.from_filename(str(executed))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, out)
    return out


def _cell_timings(executed: Path, started: float) -> dict:
    import nbformat
    import pandas as pd

    nb = nbformat.read(str(executed), as_version=4)
    out: dict[str, float] = {}
    first_start = None
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("papermill", {})
        if cell.get("cell_type") != "code" or not meta.get("start_time"):
            continue
        if first_start is None:
            first_start = pd.Timestamp(meta["start_time"]).timestamp()
        tags = [t for t in cell.get("metadata", {}).get("tags", []) if t.startswith("step-")]
        for tag in tags:
            out[f"{tag[5:]}_s"] = out.get(f"{tag[5:]}_s", 0.0) + float(meta.get("duration") or 0.0)
    if first_start is not None:
        out["kernel_start_s"] = max(0.0, first_start - started)
    return out


def _absolute(values: dict) -> dict:
    out = dict(values)
    for name in _PATH_PARAMS:
        if out.get(name):
            out[name] = str(Path(out[name]).expanduser().resolve())
    if out.get("files"):
        files = [out["files"]] if isinstance(out["files"], (str, os.PathLike)) else out["files"]
        out["files"] = [str(Path(f).expanduser().resolve()) for f in files]
    return out


def report_values(*, y: str | None = None, x: str | None = None, db: Any = None, files: Any = None,
                  archive: Any = None, timeframe: str | None = None, start: Any = None,
                  end: Any = None, market: str | None = None,
                  params: Mapping[str, Any] | None = None) -> dict:
    """The notebook parameters that the keyword arguments and ``params`` spell."""
    values: dict[str, Any] = {}
    for name, value in (("symbol_y", y), ("symbol_x", x), ("db_path", db), ("files", files),
                        ("archive", archive), ("timeframe", timeframe), ("start", start),
                        ("end", end), ("market", market)):
        if value is not None:
            values[name] = str(value) if isinstance(value, os.PathLike) else value
    values.update(params or {})
    if any(values.get(k) not in (None, "", []) for k in ("db_path", "files", "archive")):
        for k in ("db_path", "files", "archive"):  # the notebook's default source steps aside
            values.setdefault(k, None)
    if isinstance(values.get("files"), tuple):
        values["files"] = list(values["files"])
    return values


def _local_kernel(folder: Path) -> dict[str, Any]:
    """papermill keywords that start the report's kernel on Unix-domain sockets
    (ZeroMQ IPC) in ``folder`` instead of TCP ports on localhost: no other user
    of the machine can connect to it, no port can be taken between choosing and
    binding it, and the kernel has no "running over TCP without encryption"
    warning to print. Elsewhere than POSIX: papermill's default (TCP)."""
    if os.name != "posix":
        return {}
    from jupyter_client import AsyncKernelManager

    prefix = str(folder / "kernel")

    class LocalSocketKernelManager(AsyncKernelManager):
        def _transport_default(self) -> str:
            return "ipc"

        def _ip_default(self) -> str:
            return prefix

    return {"kernel_manager_class": LocalSocketKernelManager}


def run_report(*, out: str | os.PathLike, y: str | None = None, x: str | None = None,
               db: Any = None, files: Any = None, archive: Any = None, timeframe: str = "1m",
               start: Any = None, end: Any = None, market: str | None = None,
               params: Mapping[str, Any] | None = None, notebook: str | os.PathLike = "pair_report",
               kernel_name: str | None = None, start_timeout_s: float = 60.0) -> ReportOutcome:
    """Execute a report notebook headless and write ``out`` (HTML) and ``<stem>.json``.

    Parameters
    ----------
    out : path of the HTML file.
    y, x, db, files, archive, timeframe, start, end, market :
        The pair and its data source (exactly one of db/files/archive).
    params : any other notebook parameters (``window``, ``hedge``, ``z_entry`` ...).
    notebook : ``"pair_report"`` (default), ``"pair_scan"`` or a notebook path.

    Raises
    ------
    ConfigError
        Invalid parameters, before any kernel starts (pair reports).
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    t0 = time.monotonic()
    wall0 = time.time()
    src = notebook_path(notebook)
    out = Path(out).expanduser().resolve()
    if out.suffix.lower() not in (".html", ".htm"):
        raise ConfigError("out", str(out), "an .html file path")
    values = report_values(y=y, x=x, db=db, files=files, archive=archive, timeframe=timeframe,
                           start=start, end=end, market=market, params=params)
    json_path = out.with_suffix(".json")
    if src.name == NOTEBOOKS["pair_report"]:  # other notebooks write no summary JSON
        values["summary_path"] = str(json_path)
    values = _absolute(values)
    if src.name == NOTEBOOKS["pair_report"]:
        validate_parameters(values)  # fail in this process, with exit 2, before a kernel starts
        if not values.get("ledger_path"):  # resolved here: the kernel's cwd is notebooks/
            from quantlab.ledger import default_ledger_path

            values["ledger_path"] = str(default_ledger_path(
                db=values.get("db_path"), files=values.get("files"), archive=values.get("archive")))
    out.parent.mkdir(parents=True, exist_ok=True)
    failed_nb = out.with_suffix(".failed.ipynb")
    with tempfile.TemporaryDirectory(prefix="quantlab-report-") as tmp:
        executed = Path(tmp) / "executed.ipynb"
        for attempt in range(2):  # a kernel that fails to start (port race) gets one retry
            try:
                pm.execute_notebook(str(src), str(executed), parameters=values,
                                    kernel_name=kernel_name, cwd=str(src.parent), progress_bar=False,
                                    log_output=False, start_timeout=start_timeout_s,
                                    **_local_kernel(Path(tmp)))
                break
            except PapermillExecutionError as exc:
                shutil.copyfile(executed, failed_nb)
                code = 2 if exc.ename in _quantlab_error_names() else 1
                error = _one_line(f"{exc.ename}: {exc.evalue}")
                return ReportOutcome(ok=False, html=None, json=None, notebook=failed_nb,
                                     error=f"cell {exc.exec_count}: {error}", exit_code=code,
                                     timings={"total_s": time.monotonic() - t0})
            except (RuntimeError, TimeoutError) as exc:
                if attempt == 1 or executed.exists():
                    raise QuantlabError(f"the kernel did not start: {_one_line(exc)}") from exc
        timings = _cell_timings(executed, wall0)
        t_export = time.monotonic()
        export_html(executed, out)
        timings["export_s"] = time.monotonic() - t_export
    failed_nb.unlink(missing_ok=True)
    timings["total_s"] = time.monotonic() - t0
    headline = None
    if json_path.exists():
        payload = json.loads(json_path.read_text())
        payload.setdefault("timings", {}).update(timings)
        payload["html"] = out.name
        payload["html_bytes"] = out.stat().st_size
        _write_json(json_path, payload)
        headline = payload.get("headline")
    return ReportOutcome(ok=True, html=out, json=json_path if json_path.exists() else None,
                         notebook=None, error=None, exit_code=0, timings=timings, headline=headline)


def _write_json(path: Path, payload: dict) -> None:
    from quantlab.pairs import clean_json

    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(clean_json(payload), indent=2, default=str) + "\n")
    os.replace(tmp, path)


# --- batches ---------------------------------------------------------------------------------
def parse_pairs(text: str | Sequence[str]) -> list[tuple[str, str]]:
    """``"BTCUSDT/ETHUSDT,AVAXUSDT/NEARUSDT"`` -> ``[("BTCUSDT", "ETHUSDT"), ...]``.

    >>> parse_pairs("btcusdt/ethusdt, AVAXUSDT/NEARUSDT")
    [('BTCUSDT', 'ETHUSDT'), ('AVAXUSDT', 'NEARUSDT')]
    """
    items = text.split(",") if isinstance(text, str) else list(text)
    pairs = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        parts = item.split("/")
        if len(parts) != 2 or not all(p.strip() for p in parts):
            raise ConfigError("pairs", item, "pairs written Y/X separated by commas, e.g. "
                              "BTCUSDT/ETHUSDT,AVAXUSDT/NEARUSDT")
        pairs.append((parts[0].strip().upper(), parts[1].strip().upper()))
    if not pairs:
        raise ConfigError("pairs", text, "at least one pair Y/X")
    return pairs


def pairs_from_scan(path: str | os.PathLike, *, top: int | None = None) -> list[tuple[str, str]]:
    """The selected pairs of a ``quantlab scan`` table (its ``y``, ``x`` and
    ``selected`` columns), in the table's order; ``top`` keeps the first N."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise ConfigError("pairs-from", str(path), "a CSV written by `quantlab scan --out`")
    table = pd.read_csv(path)
    missing = [c for c in ("y", "x", "selected") if c not in table.columns]
    if missing:
        raise ConfigError("pairs-from", str(path), f"a scan table with columns y, x, selected "
                          f"(missing: {', '.join(missing)})")
    chosen = table[table["selected"].astype(str).str.lower().isin(("true", "1"))]
    pairs = [(str(r.y).upper(), str(r.x).upper()) for r in chosen.itertuples()]
    if top is not None:
        pairs = pairs[:top]
    if not pairs:
        raise ConfigError("pairs-from", str(path), "a scan that selected at least one pair "
                          "(none is selected: nothing to report)")
    return pairs


def _safe_name(y: str, x: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{y}-{x}")


#: Notebook parameters that ``quantlab report`` takes as its own flags.
_FLAGS = {"symbol_y": "--y", "symbol_x": "--x", "timeframe": "--timeframe", "start": "--start",
          "end": "--end", "market": "--market", "db_path": "--db", "archive": "--archive"}


def _cli_args(values: Mapping[str, Any], out: Path, notebook: str | os.PathLike) -> list[str]:
    """The ``quantlab report`` command line that runs these notebook parameters."""
    args = [sys.executable, "-m", "quantlab", "report", "--out", str(out), "--notebook", str(notebook)]
    for name, value in values.items():
        if name == "summary_path" or value is None:
            continue
        if name in _FLAGS:
            args += [_FLAGS[name], str(value)]
        elif name == "files":
            args += ["--files", *[str(f) for f in value]]
        else:
            args += ["-p", name, json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)]
    return args


class ReportJob:
    """A report rendering in a background ``quantlab report`` process.

    :meth:`poll` returns None while it runs, then the :class:`ReportOutcome`.
    """

    def __init__(self, values: Mapping[str, Any], out: Path, notebook: str | os.PathLike = "pair_report"):
        self.out = Path(out)
        self.values = dict(values)
        self._log = tempfile.NamedTemporaryFile(prefix="quantlab-report-", suffix=".log", delete=False)
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.started = time.monotonic()
        self._proc = subprocess.Popen(_cli_args(self.values, self.out, notebook), stdout=self._log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        self._outcome: ReportOutcome | None = None

    @property
    def pid(self) -> int:
        return self._proc.pid

    def poll(self) -> ReportOutcome | None:
        """None while running; the outcome once the process has ended (never blocks)."""
        if self._outcome is not None:
            return self._outcome
        code = self._proc.poll()
        if code is None:
            return None
        self._log.close()
        text = Path(self._log.name).read_text(errors="replace")
        Path(self._log.name).unlink(missing_ok=True)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        json_path = self.out.with_suffix(".json")
        headline = None
        if code == 0 and json_path.exists():
            headline = json.loads(json_path.read_text()).get("headline")
        error = None if code == 0 else _one_line(lines[-1] if lines else f"exit code {code}")
        failed = self.out.with_suffix(".failed.ipynb")
        self._outcome = ReportOutcome(ok=code == 0, html=self.out if code == 0 else None,
                                      json=json_path if code == 0 else None,
                                      notebook=failed if failed.exists() and code else None,
                                      error=error, exit_code=code,
                                      timings={"total_s": time.monotonic() - self.started},
                                      headline=headline)
        return self._outcome

    def wait(self, timeout: float | None = None) -> ReportOutcome:
        self._proc.wait(timeout)
        outcome = self.poll()
        assert outcome is not None
        return outcome

    def cancel(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()


def start_report(*, out: str | os.PathLike, notebook: str | os.PathLike = "pair_report",
                 **kwargs: Any) -> ReportJob:
    """:func:`run_report` in a background process; returns at once.

    Takes the arguments of :func:`run_report`. Parameters are validated here
    first, so a wrong value raises :class:`ConfigError` immediately.
    """
    values = _absolute(report_values(**kwargs))
    if notebook_path(notebook).name == NOTEBOOKS["pair_report"]:
        validate_parameters(values)
    out = Path(out).expanduser().resolve()
    return ReportJob(values, out, notebook)


def _progress(done: int, total: int, failed: int, started: float, stream) -> None:
    elapsed = time.monotonic() - started
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (total - done) / rate if rate > 0 else float("nan")
    eta_s = f"{eta:.0f} s" if eta == eta else "?"
    end = "\r" if stream.isatty() and done < total else "\n"
    stream.write(f"reports {done}/{total} done, {failed} failed, {rate * 60:.1f}/min, ETA {eta_s}{end}")
    stream.flush()


def run_batch(pairs: Iterable[tuple[str, str]], out_dir: str | os.PathLike, *,
              workers: int | None = None, notebook: str | os.PathLike = "pair_report",
              progress: bool = True, stream=None, **kwargs: Any) -> list[dict]:
    """One report per pair into ``out_dir`` (``Y-X.html`` + ``.json``), up to
    ``workers`` at a time (default: the core count), then ``out_dir/index.html``.

    ``kwargs``: the data source, timeframe, range and ``params`` of
    :func:`run_report`, shared by every pair. Returns one row per pair: the
    headline figures, or the error of a pair that failed (the others finish).
    """
    stream = stream or sys.stderr
    pairs = list(pairs)
    out_dir = Path(out_dir).expanduser().resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(pairs)))
    base = _absolute(report_values(**{k: v for k, v in kwargs.items() if k not in ("y", "x")}))
    pending = list(pairs)
    running: list[tuple[tuple[str, str], ReportJob]] = []
    rows: dict[tuple[str, str], dict] = {}
    started = time.monotonic()
    failed = 0
    if progress:
        _progress(0, len(pairs), 0, started, stream)
    while pending or running:
        while pending and len(running) < workers:
            y, x = pending.pop(0)
            values = {**base, "symbol_y": y, "symbol_x": x}
            running.append(((y, x), ReportJob(values, out_dir / f"{_safe_name(y, x)}.html", notebook)))
        for item in list(running):
            (y, x), job = item
            outcome = job.poll()
            if outcome is None:
                continue
            running.remove(item)
            row = {"pair": f"{y}/{x}", "symbol_y": y, "symbol_x": x, "ok": outcome.ok,
                   "html": outcome.html.name if outcome.html else None, "error": outcome.error,
                   "notebook": outcome.notebook.name if outcome.notebook else None}
            row.update({k: v for k, v in (outcome.headline or {}).items() if k not in row})
            rows[(y, x)] = row
            failed += not outcome.ok
            if progress:
                _progress(len(rows), len(pairs), failed, started, stream)
        if running:
            time.sleep(0.2)  # poll the child processes' exit (no thread is started for this)
    ordered = [rows[p] for p in pairs]
    from quantlab.reports.index import write_index

    write_index(out_dir / "index.html", ordered, title=f"Pair reports ({len(pairs)} pairs)")
    return ordered
