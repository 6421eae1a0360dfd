"""The live views in a real JupyterLab, driven by headless Chromium: watch() shows a refreshing ipywidgets
view, the kernel interrupt (the stop button) ends it and leaves the final snapshot; the run progress view
ends at 100 %."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

RUN_ROOT = Path(os.environ.get("K3SNB_TEST_RUN") or Path(os.environ["K3SNB_TMP"]).parent) / "lab-test"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
HOSTILE = "<script>window.__k3snb_xss=1</script>"
FIXTURES = Path(__file__).parent / "notebooks" / "experiments.yaml"  # 01-ok passes, 02-broken fails

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")

NOTEBOOK_CELLS = [
    # a real process tree with a log holding a blocker line (S06) and a hostile one
    "import subprocess, sys, time\nimport k3snb, k3snb.monitoring\n"
    "log = 'k3s.log'\n"
    "with open(log, 'w') as f:\n"
    "    f.write('E1130 open /dev/kmsg: no such file or directory\\n')\n"
    f"    f.write('W1130 {HOSTILE}\\n')\n"
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
    "print('frontend:', k3snb.monitoring.frontend())",
    "w = k3snb.watch(p.pid, log=log, interval=0.5)\nprint('stopped:', w.stopped)",
    # run_experiments in JupyterLab: the per-cell progress view (a fixture notebook that needs nothing)
    f"s = k3snb.run_experiments(['01', '02'], registry={str(FIXTURES)!r}, out='run')\n"
    "p.kill(); p.wait()",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab():
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    from k3snb.experiments import ensure_kernel

    shutil.rmtree(RUN_ROOT, ignore_errors=True)
    root = RUN_ROOT / "root"
    root.mkdir(parents=True)
    nb = new_notebook(cells=[new_code_cell(c) for c in NOTEBOOK_CELLS])
    nb.metadata["kernelspec"] = {"name": ensure_kernel(), "display_name": "k3snb", "language": "python"}
    nbformat.write(nb, root / "watch.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("K3SNB_RESULTS", "K3SNB_RUN_TAG", "K3SNB_LIVE")}
    log = open(RUN_ROOT / "jupyterlab.log", "wb")  # noqa: SIM115 - the server outlives this block
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
         "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
         "jupyterlab.NeverCheckForUpdate"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"jupyter lab exited: {(RUN_ROOT / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab/tree/watch.ipynb?token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = RUN_ROOT / "chromium-profile"
    profile.mkdir(parents=True, exist_ok=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1800"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(RUN_ROOT / "chromedriver.log")), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, js: str, timeout: float = 120, what: str = "", until=bool):
    """Poll ``js`` until ``until(value)``; on timeout keep a screenshot and fail naming ``what``."""
    deadline = time.monotonic() + timeout
    v = None
    while time.monotonic() < deadline:
        try:
            v = driver.execute_script(js)
        except Exception:
            v = None
        if until(v):
            return v
        time.sleep(0.3)
    shot = RUN_ROOT / f"timeout-{int(time.time())}.png"
    driver.save_screenshot(str(shot))
    pytest.fail(f"timed out waiting for {what or js} (last value {str(v)[:300]!r}; screenshot {shot})")


def output_of(i: int) -> str:
    return f"const c = [...document.querySelectorAll('.jp-Cell')][{i}]; return c ? c.querySelector('.jp-OutputArea').textContent : ''"


def test_watch_and_progress_in_jupyterlab(lab, browser):
    browser.get(lab)
    wait_for(browser, "return window.jupyterapp && document.querySelectorAll('.jp-Notebook .jp-Cell').length === 3",
             what="JupyterLab with the notebook open")
    wait_for(browser, "const w = window.jupyterapp.shell.currentWidget;"
                      "return w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel"
                      " && w.sessionContext.session.kernel.status === 'idle'", what="an idle kernel")
    browser.execute_script("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    out = wait_for(browser, output_of(0), what="cell 1 output", until=lambda t: t and "frontend:" in t)
    assert "frontend: True" in out, out

    # the live view: an ipywidgets HTML view whose sparkline grows as samples arrive
    spark = ("const o = [...document.querySelectorAll('.jp-Cell')][1].querySelector('.widget-html-content');"
             "const p = o && o.querySelector('polyline'); return p ? p.getAttribute('points').split(' ').length : 0")
    first = wait_for(browser, spark, what="the watch widget")
    wait_for(browser, spark.replace("return p ?", f"return p && p.getAttribute('points').split(' ').length > {first} + 2 ?"),
             timeout=30, what="the widget refreshing")
    text = browser.execute_script("return [...document.querySelectorAll('.jp-Cell')][1].textContent")
    assert "S06" in text and HOSTILE in text  # classified, and the hostile line shown as text
    assert browser.execute_script("return window.__k3snb_xss === undefined")
    browser.save_screenshot(str(RUN_ROOT / "watch-live.png"))

    # the stop button: interrupt the kernel; the cell ends cleanly with the final snapshot
    browser.execute_script("window.jupyterapp.commands.execute('notebook:interrupt-kernel')")
    out = wait_for(browser, output_of(1), timeout=60, what="the watch cell to stop",
                   until=lambda t: t and "stopped:" in t)
    assert "stopped: interrupted" in out, out
    assert "(interrupted)" in out
    assert not browser.execute_script(
        "return [...document.querySelectorAll('.jp-Cell')][1].querySelector('.widget-html-content')")
    assert not browser.execute_script(
        "return [...document.querySelectorAll('.jp-Cell')][1].querySelector('.jp-OutputArea-error, "
        "[data-mime-type=\"application/vnd.jupyter.stderr\"]')")

    # run_experiments shows each cell's status while it runs, and ends with the final state (not a widget)
    running = wait_for(browser, "const c = [...document.querySelectorAll('.jp-Cell')][2];"
                                "const w = c.querySelector('.widget-html-content'); return w && w.textContent",
                       timeout=120, what="the run progress widget", until=lambda t: t and "running" in t)
    assert "01-ok" in running and "02-broken" in running
    final = wait_for(browser, "const c = [...document.querySelectorAll('.jp-Cell')][2];"
                              "const pr = c.querySelector('progress');"
                              "return pr && pr.value === 2 && !c.querySelector('.widget-html-content') && c.textContent",
                     timeout=300, what="the final progress state")
    assert "01-ok" in final and "passed" in final and "02-broken" in final and "failed" in final
    browser.save_screenshot(str(RUN_ROOT / "lab-final.png"))
