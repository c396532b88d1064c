"""Drive a real JupyterLab from a test: a server on a free port and headless Chromium.

Nothing here is a pytest fixture on its own, so a test module picks what it needs::

    with JupyterLab(root_dir=tmp_path / "nb") as lab, Browser(tmp_path) as browser:
        page = browser.open_notebook(lab, "demo.ipynb")
        run_all_cells(page)

Facts this relies on (``shared/BROWSER.md``):

* JupyterLab 4.6 opens a blocking "Select Kernel" dialog unless the setting
  ``@jupyterlab/notebook-extension:tracker`` ``autoStartDefaultKernel`` is true.
  We write it as a *user* setting inside the temp ``JUPYTERLAB_SETTINGS_DIR`` so
  the venv's ``share/jupyter/lab/settings/overrides.json`` is never touched.
* Bokeh 3 draws inside shadow DOM; ``window.Bokeh.documents`` is the way to read
  what was rendered.
* Liveness is judged from the page (Bokeh data), never the kernel status bar.

The server runs with ``expose_app_in_browser`` so the test can call JupyterLab
commands (``notebook:run-all-cells``) instead of hunting for menu items.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.util import wait_until

CHROMIUM = os.environ.get("QUANTLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

# User settings written into the temporary settings dir, keyed by plugin id.
LAB_SETTINGS: dict[str, dict[str, Any]] = {
    # No "Select Kernel" dialog: open notebooks with their default kernel.
    "@jupyterlab/notebook-extension/tracker": {"autoStartDefaultKernel": True},
    # Offline: no news / update check pop-ups over the notebook.
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false",
                                                    "checkForUpdates": False},
    # The extension manager would query PyPI from the browser.
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_available() -> bool:
    return Path(CHROMIUM).exists()


class JupyterLab:
    """A JupyterLab server in a subprocess, isolated in a temp directory.

    Parameters
    ----------
    root_dir : directory served as the notebook root (give it a *copy* of the
        notebooks: JupyterLab writes checkpoints and may save).
    env : extra environment for the server (and so for its kernels).
    log_path : where the server's stdout/stderr go (default: inside the temp dir).
    """

    def __init__(self, root_dir: Path, env: dict[str, str] | None = None,
                 log_path: Path | None = None, startup_timeout: float = 60.0):
        self.root_dir = Path(root_dir)
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._extra_env = dict(env or {})
        self._startup_timeout = startup_timeout
        self._home = Path(tempfile.mkdtemp(prefix="quantlab-lab-"))
        self.log_path = Path(log_path) if log_path else self._home / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None
        self._log = None

    # -- lifecycle -------------------------------------------------------------
    def _prepare_dirs(self) -> dict[str, str]:
        home = self._home
        dirs = {
            "HOME": home / "home",
            "JUPYTER_CONFIG_DIR": home / "config",
            "JUPYTER_DATA_DIR": home / "data",
            "JUPYTER_RUNTIME_DIR": home / "runtime",
            "JUPYTERLAB_SETTINGS_DIR": home / "lab-user-settings",
            "JUPYTERLAB_WORKSPACES_DIR": home / "lab-workspaces",
            "IPYTHONDIR": home / "ipython",
        }
        for d in dirs.values():
            d.mkdir(parents=True, exist_ok=True)
        for plugin, values in LAB_SETTINGS.items():
            package, name = plugin.rsplit("/", 1)
            target = dirs["JUPYTERLAB_SETTINGS_DIR"] / package / f"{name}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        return {k: str(v) for k, v in dirs.items()}

    def start(self) -> "JupyterLab":
        dirs = self._prepare_dirs()
        env = dict(os.environ)
        env.update(dirs)
        env.update(self._extra_env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={self.port}",
            "--ip=127.0.0.1", "--allow-root", f"--ServerApp.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.port_retries=0",
            f"--LabApp.user_settings_dir={dirs['JUPYTERLAB_SETTINGS_DIR']}",
            f"--LabApp.workspaces_dir={dirs['JUPYTERLAB_WORKSPACES_DIR']}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.open_browser=False",
        ]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                     cwd=str(self.root_dir), start_new_session=True)
        wait_until(self._ready, timeout=self._startup_timeout,
                   message=f"JupyterLab on {self.url} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"JupyterLab exited with {self.proc.returncode}; "
                                 f"log: {self.log_path}\n{self.log_tail()}")
        try:
            self.api("GET", "/api/status", timeout=2)
            return True
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        """Shut every kernel down through ``/api/sessions``, then stop the server by PID."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None:
                self.shutdown_kernels()
        except Exception:  # the server may be gone already; the kill below still runs
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if self._log:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        shutil.rmtree(self._home, ignore_errors=True)

    def __enter__(self) -> "JupyterLab":
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop()
        # Keep the temp HOME (and the log, if it is in there) when the test failed.
        inside = self._home in self.log_path.parents
        if exc_type is None or not inside:
            self.cleanup()

    # -- REST ------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def sessions(self) -> list[dict]:
        return self.api("GET", "/api/sessions")

    def shutdown_kernels(self) -> None:
        for session in self.sessions():
            try:
                self.api("DELETE", f"/api/sessions/{session['id']}")
            except urllib.error.HTTPError:
                pass
        for kernel in self.api("GET", "/api/kernels"):
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
            except urllib.error.HTTPError:
                pass

    def notebook_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}&reset"

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""


class Browser:
    """Headless Debian Chromium through Playwright's sync API.

    Collects console errors and uncaught page errors of every page it opens
    (``errors``) and saves screenshots into ``out_dir`` (``screenshot(page, name)``
    returns the path, to attach to assertion messages).
    """

    def __init__(self, out_dir: Path, viewport: tuple[int, int] = (1400, 1000)):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.viewport = viewport
        self.errors: list[str] = []
        self.console: list[str] = []
        self._pw = None
        self._browser = None
        self.context = None

    def __enter__(self) -> "Browser":
        from playwright.sync_api import sync_playwright

        if not chromium_available():
            raise RuntimeError(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        self._pw = sync_playwright().start()
        self._browser = self._pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS,
                                                 headless=True)
        self.context = self._browser.new_context(
            viewport={"width": self.viewport[0], "height": self.viewport[1]})
        return self

    def __exit__(self, *exc: object) -> None:
        for closer in (lambda: self.context.close(), lambda: self._browser.close(),
                       lambda: self._pw.stop()):
            try:
                closer()
            except Exception:
                pass

    def new_page(self):
        page = self.context.new_page()

        def on_console(msg) -> None:
            line = f"[{msg.type}] {msg.text}"
            self.console.append(line)
            if msg.type == "error":
                self.errors.append(line)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: self.errors.append(f"[pageerror] {exc}"))
        return page

    def screenshot(self, page, name: str) -> Path:
        path = self.out_dir / f"{name}.png"
        try:
            page.screenshot(path=str(path), full_page=False)
        except Exception as exc:  # a screenshot must never hide the real failure
            return Path(f"<screenshot failed: {exc}>")
        return path

    def open_notebook(self, lab: JupyterLab, name: str, timeout_s: float = 60.0):
        """Open ``name`` in JupyterLab and wait until its kernel is idle."""
        page = self.new_page()
        page.goto(lab.notebook_url(name), timeout=timeout_s * 1000)
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell"
                               " && document.querySelector('.jp-Notebook')",
                               timeout=timeout_s * 1000)
        wait_kernel_idle(page, timeout_s=timeout_s)
        return page


# -- notebook helpers (JavaScript through the exposed app) ----------------------

_CURRENT_PANEL_JS = """
() => {
  const app = window.jupyterapp;
  const w = app && app.shell.currentWidget;
  return w && w.content && w.sessionContext ? w : null;
}
"""


def wait_kernel_idle(page, timeout_s: float = 60.0) -> None:
    """Wait until the current notebook's kernel exists and reports idle."""
    page.wait_for_function(
        f"""() => {{
            const w = ({_CURRENT_PANEL_JS})();
            if (!w) return false;
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            return !!k && k.status === 'idle' && k.connectionStatus === 'connected';
        }}""", timeout=timeout_s * 1000)


def run_command(page, command: str, args: dict | None = None) -> None:
    page.evaluate("([c, a]) => window.jupyterapp.commands.execute(c, a || {})",
                  [command, args])


def run_all_cells(page, timeout_s: float = 30.0) -> None:
    """Run all cells and wait until the first code cell has been executed
    (an early command can run nothing, so re-issue it once if needed)."""
    def first_prompt() -> str | None:
        return page.evaluate(
            f"""() => {{
                const w = ({_CURRENT_PANEL_JS})();
                const cells = w.content.widgets.filter(c => c.model.type === 'code');
                return cells.length ? String(cells[0].model.executionCount) : null;
            }}""")

    run_command(page, "notebook:run-all-cells")
    deadline = time.monotonic() + timeout_s
    reissued = False
    while True:
        count = first_prompt()
        if count not in (None, "null", "undefined"):
            return
        if not reissued and time.monotonic() > deadline - timeout_s / 2:
            run_command(page, "notebook:run-all-cells")
            reissued = True
        if time.monotonic() > deadline:
            raise AssertionError("Run All did not execute the first cell")
        page.wait_for_timeout(100)


def cell_outputs_text(page, index: int) -> str:
    """Text of the outputs of cell ``index`` (all cells count), from the
    notebook model: stream text and ``text/plain`` of results, no prompts."""
    return page.evaluate(
        f"""(i) => {{
            const w = ({_CURRENT_PANEL_JS})();
            const cell = w.content.widgets[i];
            if (!cell || !cell.model.outputs) return '';
            const out = [];
            const outputs = cell.model.outputs;
            for (let k = 0; k < outputs.length; k++) {{
                const o = outputs.get(k).toJSON();
                if (o.text) out.push(Array.isArray(o.text) ? o.text.join('') : o.text);
                else if (o.data && o.data['text/plain']) {{
                    const t = o.data['text/plain'];
                    out.push(Array.isArray(t) ? t.join('') : t);
                }} else if (o.ename) out.push(o.ename + ': ' + o.evalue);
            }}
            return out.join('\\n');
        }}""", index)


def cell_execution_count(page, index: int):
    return page.evaluate(
        f"""(i) => {{
            const w = ({_CURRENT_PANEL_JS})();
            const c = w.content.widgets[i];
            return c ? c.model.executionCount : null;
        }}""", index)


def cell_count(page) -> int:
    return page.evaluate(f"() => ({_CURRENT_PANEL_JS})().content.widgets.length")


def append_and_run_cell(page, source: str) -> int:
    """Append a code cell with ``source`` at the end, run it; return its index."""
    return page.evaluate(
        f"""async (src) => {{
            const w = ({_CURRENT_PANEL_JS})();
            const nb = w.content;
            const app = window.jupyterapp;
            nb.activeCellIndex = nb.widgets.length - 1;
            nb.mode = 'command';
            await app.commands.execute('notebook:insert-cell-below');
            const cell = nb.activeCell;
            cell.model.sharedModel.setSource(src);
            await app.commands.execute('notebook:run-cell');
            return nb.widgets.indexOf(cell);
        }}""", source)


def bokeh_sources(page) -> list[dict]:
    """Every ColumnDataSource of every rendered Bokeh document: its ``name``,
    row count and the last value of each numeric column (for change detection)."""
    return page.evaluate(
        """() => {
            const out = [];
            const B = window.Bokeh;
            if (!B || !B.documents) return out;
            for (const doc of B.documents) {
                for (const m of doc.all_models) {
                    if (!m.data || typeof m.stream !== 'function') continue;
                    const data = m.data instanceof Map ? Object.fromEntries(m.data) : m.data;
                    const cols = Object.keys(data);
                    const n = cols.length ? (data[cols[0]] || []).length : 0;
                    const last = {};
                    for (const c of cols) {
                        const v = data[c];
                        if (v && v.length) {
                            const x = v[v.length - 1];
                            if (typeof x === 'number') last[c] = x;
                        }
                    }
                    out.push({id: m.id, name: m.name, n, last});
                }
            }
            return out;
        }""")


def bokeh_column(page, source_name: str, column: str) -> list | None:
    """All values of ``column`` of the Bokeh data source named ``source_name``
    (None when no rendered document has it yet)."""
    return page.evaluate(
        """([name, col]) => {
            const B = window.Bokeh;
            if (!B || !B.documents) return null;
            for (const doc of B.documents) {
                for (const m of doc.all_models) {
                    if (m.name !== name || !m.data) continue;
                    const data = m.data instanceof Map ? Object.fromEntries(m.data) : m.data;
                    const v = data[col];
                    return v ? Array.from(v, x => (typeof x === 'number' && !isFinite(x)) ? null : x)
                             : null;
                }
            }
            return null;
        }""", [source_name, column])


def set_notebook_parameters(path: Path, **values: Any) -> None:
    """Rewrite assignments in the cell tagged ``parameters`` of the notebook at
    ``path`` (``name = value`` lines, values written with ``repr``)."""
    import re

    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            for name, value in values.items():
                pattern = re.compile(rf"^{re.escape(name)}\s*=.*?(?=\s*#|$)", re.MULTILINE)
                if not pattern.search(src):
                    raise KeyError(f"{name} is not assigned in the parameters cell")
                src = pattern.sub(f"{name} = {value!r}", src, count=1)
            cell["source"] = src
            break
    else:
        raise KeyError(f"{path} has no cell tagged 'parameters'")
    Path(path).write_text(json.dumps(nb, indent=1))
