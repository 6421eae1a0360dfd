"""The findings report, built from real runs of a fixture notebook (tests/notebooks/report/), checked in a
real headless Chromium: console, matrix, notebook links, plots, escaping; markdown form; `k3snb runs`
and `k3snb report A B`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

import k3snb
from k3snb import _capabilities as cap

HERE = Path(__file__).parent
REG = HERE / "notebooks" / "report" / "experiments.yaml"
HOSTILE = "<script>window.__k3snb_xss=1</script>"
# the test run folder (scripts/test.sh or conftest names it): screenshots and runs stay inside it
RUN_ROOT = Path(os.environ.get("K3SNB_TEST_RUN") or Path(os.environ["K3SNB_TMP"]).parent) / "report-test"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = pytest.mark.root  # the fixture notebook opens the host runner (private namespaces)


@pytest.fixture(scope="module")
def runs():
    """Run A: the fixture under host (and gVisor when runsc is here) plus a skipped experiment;
    run B: host only with flip=True, so R1 flips."""
    if not cap.is_root():
        pytest.skip("needs root (run the suite as root)")
    base = RUN_ROOT / "runs"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    runners = ["host", "gvisor"] if cap.has_runsc() else ["host"]
    # the registry through the environment, as a user of a private registry would set it: the report
    # reads the same registry for the claims of skipped experiments
    old = os.environ.get("K3SNB_REGISTRY")
    os.environ["K3SNB_REGISTRY"] = str(REG)
    try:
        a = k3snb.run_experiments(["01", "02"], runners=runners, out=base / "A", progress=False)
        assert a.exit_code == 0, a.table()
        b = k3snb.run_experiments(["01"], params={"flip": True}, runners=["host"], out=base / "B", progress=False)
        assert b.exit_code == 0, b.table()
        yield [base / "A", base / "B"]
    finally:
        if old is None:
            os.environ.pop("K3SNB_REGISTRY", None)
        else:
            os.environ["K3SNB_REGISTRY"] = old


def expected_matrix(run: Path) -> dict[str, dict[str, set[str]]]:
    """claim -> env -> statuses, straight from the run's results.json files (not from the report code)."""
    out: dict[str, dict[str, set[str]]] = {}
    for row in json.loads((run / "summary.json").read_text())["rows"]:
        res = run / row["id"] / "results.json"
        if row["status"] != "passed":
            continue
        env = "host" if row["runner"] == "host" else "gvisor-2022"
        for v in json.loads(res.read_text())["verdicts"]:
            out.setdefault(v["claim"], {}).setdefault(env, set()).add(v["status"])
    return out


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = RUN_ROOT / "chromium-profile"  # a fresh profile per test run, never $HOME
    shutil.rmtree(profile, ignore_errors=True)
    profile.mkdir(parents=True)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={profile}", "--window-size=1400,1800"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER, log_output=str(RUN_ROOT / "chromedriver.log")),
                              options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e.get("level") in ("SEVERE", "WARNING")]


def test_console_check_can_fail(browser):
    # the "no console errors" assertions below mean something only if an error would be seen
    browser.get("data:text/html,<script>console.error('k3snb-probe')</script>")
    assert any("k3snb-probe" in e["message"] for e in errors(browser))


def test_report_page_in_browser(runs, browser):
    run = runs[0]
    page = run / "report.html"
    assert page.is_file(), "k3snb run must leave report.html in the run folder"
    browser.get(page.as_uri())
    assert errors(browser) == []

    # one matrix row per judged claim, each cell with the run's verdicts for that environment
    expected = expected_matrix(run)
    rows = browser.execute_script(
        "return [...document.querySelectorAll('table.matrix tbody tr.claim')].map(tr => ({"
        " claim: tr.dataset.claim, cells: Object.fromEntries([...tr.querySelectorAll('td[data-env]')].map("
        "  td => [td.dataset.env, [...td.querySelectorAll('details.cell')].map(d => d.dataset.status)]))}))")
    assert sorted(r["claim"] for r in rows) == sorted(expected)
    for r in rows:
        got = {env: set(s) for env, s in r["cells"].items() if s}
        assert got == expected[r["claim"]], r["claim"]
    if cap.has_runsc():  # the kernel-release claim differs between the environments
        r2 = next(r for r in rows if r["claim"].startswith("R2"))
        assert r2["cells"]["host"] == ["refuted"] and r2["cells"]["gvisor-2022"] == ["reproduced"]
    # claims not judged say why: R4 (no verdict) and R5 (its experiment was skipped)
    nj = browser.execute_script("return document.querySelector('table.not-judged').textContent")
    assert "R4" in nj and "no verdict" in nj
    assert "R5" in nj and "k3snb-no-such-program" in nj

    # hostile evidence is text, never markup
    assert browser.execute_script("return document.scripts.length") == 0
    assert browser.execute_script("return window.__k3snb_xss === undefined")
    assert HOSTILE in browser.execute_script("return document.body.textContent")

    # every plot loads
    imgs = browser.execute_script(
        "return [...document.querySelectorAll('img.plot')].map(i => [i.complete, i.naturalWidth])")
    passed = sum(1 for r in json.loads((run / "summary.json").read_text())["rows"] if r["status"] == "passed")
    assert len(imgs) >= passed and all(ok and w > 0 for ok, w in imgs)

    shot = RUN_ROOT / "report.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

    # every notebook link resolves to the exported notebook, which also loads cleanly offline
    links = browser.execute_script("return [...document.querySelectorAll('a.notebook')].map(a => a.href)")
    assert len(links) == passed
    for href in links:
        target = Path(unquote(urlparse(href).path))
        assert target.is_file() and target.suffix == ".html"
        browser.get(href)
        assert "Fixture: a report page" in browser.execute_script("return document.body.textContent")
        assert browser.execute_script("return window.__k3snb_xss === undefined")
        assert errors(browser) == [], href


def test_report_markdown(runs):
    out = RUN_ROOT / "write-up.md"
    rep = k3snb.make_report(runs[0], out)
    text = out.read_text()
    # markdown, not HTML: plain where nothing needs escaping, backslash escapes where something does
    assert "rootfs 9p -> ext4" in text and "&lt;" not in text and "&gt;" not in text, text
    assert "\\<script>window.\\_\\_k3snb_xss=1\\</script>" in text
    assert f"| kit version | {k3snb.__version__} |" in text  # a number at a cell's start stays as it is
    # rendered by a markdown renderer, every run string is text again: no tag, emphasis or code of its own
    tags, rendered = render_md(text)
    assert not {"script", "b"} & set(tags), tags
    assert "E1130 kubelet: <script>window.__k3snb_xss=1</script> & \"q\"" in rendered
    assert "not-testable: " + R3_REASON in rendered
    assert len(rep.claims) == len(expected_matrix(runs[0]))
    for claim in rep.claims:
        assert claim.split(":")[0] in text
    pngs = sorted((RUN_ROOT / "write-up_files").glob("*.png"))
    assert pngs and all(f"write-up_files/{p.name}" in text for p in pngs)
    for link in (line.split("](")[1].rstrip(")") for line in text.splitlines() if "[executed notebook](" in line):
        assert (RUN_ROOT / link).is_file()


R3_REASON = "# no k3s | rootfs 9p -> ext4, *as is*, `mount`, net_raw, a < b & c &amp; <b>x</b>"  # the fixture's


def render_md(text: str) -> tuple[list[str], str]:
    """Markdown -> (HTML start tags, text), rendered by mistune (nbconvert's markdown renderer) with GFM tables."""
    from html.parser import HTMLParser

    import mistune

    class Collect(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tags: list[str] = []
            self.text: list[str] = []

        def handle_starttag(self, tag, attrs) -> None:
            self.tags.append(tag)

        def handle_data(self, data) -> None:
            self.text.append(data)

    c = Collect()
    c.feed(mistune.create_markdown(plugins=["table", "strikethrough"])(text))
    return c.tags, "".join(c.text).strip()


@pytest.mark.parametrize("where", ["| a |\n|---|\n| {} |", "> {}", "- **R1** {}", "{}", "### {}"])
def test_markdown_escaping_reads_back_as_the_same_text(where):
    from k3snb.report._report import _md

    texts = [R3_REASON, "__init__ _x_ ~~gone~~ runsc 0.0~20240729.0", "[l](http://x) <http://y> \\<b> back\\slash",
             "12. x", "3) y", "- y", "> q", "+ z", "= w", "<!-- c -->", "a  |\n b", "**b**", "&#60;", "x\\"]
    for t in texts:
        tags, text = render_md(where.format(_md(t, line_start=where.startswith(("{", ">")))))
        assert text.endswith(" ".join(t.split())), (t, _md(t), text)
        assert set(tags) <= {"table", "thead", "tbody", "tr", "th", "td", "blockquote", "p", "ul", "li", "strong",
                             "h3"}, (t, _md(t), tags)
    assert _md("rootfs 9p -> ext4 net_raw 0.0~20240729.0") == "rootfs 9p -> ext4 net_raw 0.0~20240729.0"


def k3snb_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "k3snb", *args], capture_output=True, text=True, timeout=300)


def test_runs_and_compare(runs, browser):
    a, b = runs
    listed = k3snb_cli("runs", str(a.parent), "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["run"] for r in rows] == ["A", "B"]
    assert all(r["commit"] != "unknown" and r["report"] for r in rows)
    assert rows[1]["refuted"] >= 1 and rows[0]["skipped"] >= 1
    assert "A" in k3snb_cli("runs", str(a.parent)).stdout

    out = RUN_ROOT / "compare.html"
    done = k3snb_cli("report", str(a), str(b), "--out", str(out), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    flips = [c for c in doc["changes"] if c["kind"] == "flipped"]
    assert [(c["what"], c["before"], c["after"]) for c in flips] == [
        ("R1: a log line is kept verbatim [host]", "reproduced", "refuted")]
    browser.get(out.as_uri())
    assert errors(browser) == []
    assert "flipped" in browser.execute_script("return document.querySelector('table.changes').textContent")

    for missing, what in ((a.parent / "no-such-folder", "does not exist"), (a / "summary.json", "is not a folder")):
        bad = k3snb_cli("runs", str(missing))  # a typo is not "no runs"
        assert bad.returncode == 2 and f"error: runs folder {missing} {what}" in bad.stderr, bad.stderr
        assert "fix:" in bad.stderr and bad.stdout == ""
    bad = k3snb_cli("report", str(a.parent / "no-such-run"))
    assert bad.returncode == 2 and "error:" in bad.stderr and "fix:" in bad.stderr
    bad = k3snb_cli("report", str(a), "--out", str(RUN_ROOT / "x.txt"))
    assert bad.returncode == 2 and ".html or .md" in bad.stderr


def test_hypothesis_markdown_is_rendered_after_escaping():
    from k3snb.report._report import inline_md

    out = inline_md("the root is **9p**; `uname -r` says `<script>x</script>` and **<img src=x onerror=1>**")
    assert "<b>9p</b>" in out and "<code>uname -r</code>" in out
    assert "<script>" not in out and "<img" not in out and "&lt;script&gt;" in out


def test_which_environments_a_verdict_speaks_for():
    from k3snb.report._runs import Unit

    u = Unit("25-x", "25-x", "gvisor:2024:ptrace", "passed", "", 1.0, {}, Path("."), None)
    assert u.env == "gvisor-2024/ptrace"
    # its own list (keys or runner specs) wins; then evidence keys named per environment; then the cell's runner
    assert u.verdict_envs({"claim": "c", "environments": ["gvisor:2022", "host", "nonsense"]}) == ["host", "gvisor-2022"]
    assert u.verdict_envs({"claim": "c", "evidence": {"gvisor-2022.root": 1, "gvisor-2024.root": 2}}) == [
        "gvisor-2022", "gvisor-2024"]
    assert u.verdict_envs({"claim": "c", "evidence": {"rows": [], "gvisor-2022.root": 1}}) == ["gvisor-2024/ptrace"]
    assert Unit("h", "h", "host", "passed", "", 1.0, {}, Path("."), None).env == "host"
