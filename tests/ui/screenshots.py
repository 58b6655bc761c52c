"""Take a headless-Chromium screenshot of every UI page against real local back ends (``make screenshots``).

Starts, all on loopback: a local MLflow store with two registered versions and
the real inference app serving it, the data API replica, an SQLite data DB
filled through ``covertype.store``, and the Airflow REST stub of
``tests/ui/airflow_stub.py`` (a real Airflow is the compose stack's business).
Then runs ``streamlit run ui/streamlit_app.py`` against them and drives
Chromium over the DevTools protocol: open each page, wait until Streamlit has
finished running the script, submit the Predict form, upload a CSV on the Batch
page, and save ``docs/screenshots/<page>.png``.

With ``UI_URL`` set (``make screenshots UI_URL=http://localhost:8503``) it starts
nothing and photographs a running stack's UI instead: real Airflow runs and
real MLflow history.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.ui import backends
from tests.ui.airflow_stub import AirflowStubState, create_stub, sample_runs
from tests.ui.servers import free_port, serve

REPO_ROOT = Path(__file__).resolve().parents[2]
OUT_DIR = REPO_ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
WINDOW = (1400, 1000)
PAGE_TIMEOUT_S = 60.0
SETTLE_S = 2.5
# (macro_f1, rows_used) of the training runs shown on the Models page: six DAG runs' worth.
SCREENSHOT_HISTORY = ((0.62, 151), (0.71, 453), (0.76, 906), (0.75, 1359), (0.80, 2265), (0.83, 3171))
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
# Streamlit shows the status widget while the script runs; a page is ready when it is gone, a title is
# shown, and every visible chart and table has drawn (Vega charts and the data grid render into canvas/svg).
READY_JS = """(() => {
  const running = document.querySelector('[data-testid="stStatusWidget"]');
  const title = document.querySelector('h1');
  const skeleton = document.querySelector('[data-testid="stSkeleton"]');
  // Only what is on screen: collapsed expanders and content below the fold are not drawn.
  const shown = (selector) => [...document.querySelectorAll(selector)].filter(
    e => e.offsetParent !== null && e.getBoundingClientRect().top < window.innerHeight);
  const charts = shown('[data-testid="stVegaLiteChart"]');
  const tables = shown('[data-testid="stDataFrame"]');
  const drawn = charts.every(c => c.querySelector('canvas, svg')) && tables.every(t => t.querySelector('canvas'));
  return Boolean(title) && !running && !skeleton && drawn;
})()"""
STATE_JS = """(() => JSON.stringify({
  running: Boolean(document.querySelector('[data-testid="stStatusWidget"]')),
  title: Boolean(document.querySelector('h1')),
  skeleton: Boolean(document.querySelector('[data-testid="stSkeleton"]')),
  charts: [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].map(
    c => [c.offsetParent !== null, Boolean(c.querySelector('canvas, svg'))]),
  tables: [...document.querySelectorAll('[data-testid="stDataFrame"]')].map(
    t => [t.offsetParent !== null, Boolean(t.querySelector('canvas'))]),
}))()"""
COUNT_JS = """(() => [document.querySelectorAll('[data-testid="stVegaLiteChart"]').length,
                 document.querySelectorAll('[data-testid="stDataFrame"]').length])()"""


def shared_csv() -> Path:
    configured = os.environ.get("COVERTYPE_CSV")
    path = Path(configured) if configured else REPO_ROOT.parent / "shared" / "data" / "covertype.csv"
    if not path.is_file():
        raise SystemExit(f"shared dataset not found at {path}: set COVERTYPE_CSV")
    return path.resolve()


def wait_for_http(url: str, timeout_s: float = PAGE_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


@contextmanager
def streamlit_server(env: dict[str, str]) -> Iterator[str]:
    """``streamlit run`` on a free loopback port, stopped at the end."""
    port = free_port()
    command = [
        sys.executable, "-m", "streamlit", "run", str(REPO_ROOT / "ui" / "streamlit_app.py"),
        "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none", "--client.toolbarMode", "viewer",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=20)


class Browser:
    """Headless Chromium driven over the DevTools protocol (one tab)."""

    def __init__(self, socket: ClientConnection) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            reply = json.loads(self._socket.recv(timeout=PAGE_TIMEOUT_S))
            if reply.get("id") == message_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return result.get("result", {}).get("value")

    def wait_until(self, expression: str, what: str) -> None:
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}; page state: {self.evaluate(STATE_JS)}")
            time.sleep(0.3)
        time.sleep(SETTLE_S)  # let tables and charts finish their first paint

    def open(self, url: str, height: int) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride", width=WINDOW[0], height=height, deviceScaleFactor=1, mobile=False
        )
        self.call("Page.navigate", url=url)
        time.sleep(1.0)
        self.wait_until(READY_JS, f"{url} to render")

    def click_button(self, label: str) -> None:
        clicked = self.evaluate(
            f"""(() => {{
              const button = [...document.querySelectorAll('button')].find(b => b.innerText.includes({label!r}));
              if (button) {{ button.click(); return true; }}
              return false;
            }})()"""
        )
        if not clicked:
            raise RuntimeError(f"no button labelled {label!r}")

    def upload(self, path: Path) -> None:
        document = self.call("DOM.getDocument", depth=-1, pierce=True)
        node = self.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="input[type=file]")
        self.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(path)])

    def save(self, path: Path) -> None:
        self.wait_until(READY_JS, f"{path.stem} to finish drawing")
        charts, tables = self.evaluate(COUNT_JS)
        shot = self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        print(f"saved {path.relative_to(REPO_ROOT)} ({charts} charts, {tables} tables)")


@contextmanager
def chromium(profile: Path) -> Iterator[Browser]:
    port = free_port()
    command = [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
               f"--window-size={WINDOW[0]},{WINDOW[1]}", "about:blank"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/json/version")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as response:
            tab = next(item for item in json.load(response) if item.get("type") == "page")
        with connect(tab["webSocketDebuggerUrl"], max_size=None) as socket:
            browser = Browser(socket)
            browser.call("Page.enable")
            yield browser
    finally:
        process.terminate()
        process.wait(timeout=20)


def batch_upload_file(csv_path: Path, folder: Path) -> Path:
    """Thirty real rows and two bad ones, as a person might upload."""
    lines = csv_path.read_text().splitlines()
    header, rows = lines[0], lines[1:31]
    bad_soil = rows[0].rsplit(",", 2)[0] + ",C9999," + rows[0].rsplit(",", 1)[1]
    too_high = "99999," + rows[1].split(",", 1)[1]
    path = folder / "sample_upload.csv"
    path.write_text("\n".join([header, *rows, bad_soil, too_high]) + "\n")
    return path


def shoot_every_page(browser: Browser, base: str, csv_path: Path, folder: Path) -> None:
    """Open each page of the UI at ``base``, act on the interactive ones, save ``docs/screenshots/<page>.png``."""
    browser.open(f"{base}/", 1080)
    browser.click_button("Predict the cover type")
    browser.wait_until("document.body.innerText.includes('Predicted cover type')", "the prediction")
    browser.save(OUT_DIR / "predict.png")

    browser.open(f"{base}/batch", 1250)
    browser.upload(batch_upload_file(csv_path, folder))
    browser.wait_until("document.body.innerText.includes('Rejected rows')", "the batch predictions")
    browser.save(OUT_DIR / "batch.png")

    for page, height in (("pipeline", 900), ("models", 1300), ("data", 1300)):
        browser.open(f"{base}/{page}", height)
        browser.save(OUT_DIR / f"{page}.png")


def main() -> None:
    """Against local back ends and the Airflow stub; or, with ``UI_URL`` set, against a running stack's UI."""
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium (or set CHROMIUM)")
    csv_path = shared_csv()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    running_ui = os.environ.get("UI_URL")
    # Chromium may still be writing its profile while the folder is removed: that must not fail the run.
    with tempfile.TemporaryDirectory(prefix="ui-screenshots-", ignore_cleanup_errors=True) as tmp, ExitStack() as stack:
        folder = Path(tmp)
        if running_ui:
            base = running_ui.rstrip("/")
            wait_for_http(f"{base}/_stcore/health")
        else:
            base = stack.enter_context(local_ui(folder, csv_path, stack))
        browser = stack.enter_context(chromium(folder / "chromium-profile"))
        shoot_every_page(browser, base, csv_path, folder)


def local_ui(folder: Path, csv_path: Path, stack: ExitStack) -> contextlib.AbstractContextManager[str]:
    """``streamlit run`` against local back ends (MLflow store, inference, replica, SQLite, Airflow stub)."""
    frame = backends.load_frame(csv_path)
    store = backends.build_mlflow_store(folder / "mlflow", frame, history=SCREENSHOT_HISTORY)
    inference_url = stack.enter_context(backends.inference_server(store.tracking_uri))
    data_db_url = backends.fill_data_db(folder / "covertype.db", csv_path, batches=4)
    data_api_url = stack.enter_context(backends.data_api_server(csv_path, folder / "data-api", portions=4))
    airflow = AirflowStubState(runs=sample_runs(6))
    airflow_url = stack.enter_context(serve(create_stub(airflow)))
    env = {
        **os.environ,
        "INFERENCE_URL": inference_url,
        "MLFLOW_TRACKING_URI": store.tracking_uri,
        "MLFLOW_UI_URL": "http://localhost:5000",
        "DATA_DB_URL": data_db_url,
        "DATA_API_URL": data_api_url,
        "AIRFLOW_API_URL": airflow_url,
        "AIRFLOW_USERNAME": airflow.username,
        "AIRFLOW_PASSWORD": airflow.password,
        "DATA_DIR": str(folder / "ui-data"),
    }
    return streamlit_server(env)


if __name__ == "__main__":
    if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} not found: apt-get install -y chromium")
    main()
