"""Seeing a sweep: tracking.mode in specs, SwanLab's local dashboard (swanlab watch) and analyze.py's report.

The browser tests drive a real headless Chromium through selenium and chromedriver. Without them
(Debian: apt-get install chromium chromium-driver; .ci/run installs them when it runs as root) they
are skipped, saying why. Their screenshots are written to the test's tmp folder; the path is printed
(pytest -rP shows it).
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from hypir_sweep.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000"]
WATCH_LINE = "SwanLab dashboard of every trial: "


def _spec(tmp_path: Path, **tracking) -> Path:
    spec = {"name": "seen", "base_config": str(ROOT / "configs" / "tiny.yaml"),
            "space": {"lambda_l2": {"type": "uniform", "low": 0.5, "high": 4.0}}, "resources": {"gpu": 0}}
    if tracking:
        spec["tracking"] = tracking
    path = tmp_path / "seen.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_tracking_mode_of_a_spec_goes_into_every_trial_config(tmp_path):
    default = load_spec(_spec(tmp_path))
    assert default.tracking.mode == "auto"  # tiny.yaml leaves swanlab_mode at its default
    spec = load_spec(_spec(tmp_path, mode="offline", project="HYPIR-sweeps"))
    cfg = spec.trial_config({"lambda_l2": 2.0}, str(tmp_path / "trial_1"), "seen-1",
                            logging_dir=str(tmp_path / "swanlog"))
    assert (cfg.swanlab_mode, cfg.swanlab_project, cfg.logging_dir) == ("offline", "HYPIR-sweeps",
                                                                        str(tmp_path / "swanlog"))
    with pytest.raises(SpecError, match="'tracking.mode' .* must be one of auto, cloud, local, offline"):
        load_spec(_spec(tmp_path, mode="online"))
    bad = yaml.safe_load(_spec(tmp_path).read_text())
    bad["space"]["swanlab_mode"] = {"type": "choice", "values": ["local", "offline"]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    with pytest.raises(SpecError, match="the sweep sets swanlab_mode itself"):
        load_spec(tmp_path / "bad.yaml")


def test_local_mode_without_the_dashboard_is_refused_before_the_sweep_starts(tmp_path, monkeypatch):
    import hypir_sweep.spec

    monkeypatch.setattr(hypir_sweep.spec, "local_mode_available", lambda: False)
    with pytest.raises(SpecError, match=r"'tracking.mode' .*pip install -e '\.\[dashboard\]'"):
        load_spec(_spec(tmp_path, mode="local"))
    assert load_spec(_spec(tmp_path)).tracking.mode == "auto"  # auto then logs offline; nothing to refuse


# ---- in a browser ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven by selenium through chromedriver (no network needed)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser tests need selenium: "
                                                                 "pip install -e '.[dev]'")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not chromium or not chromedriver:
        pytest.skip("the browser tests need Chromium and chromedriver on PATH (Debian: apt-get install chromium "
                    "chromium-driver; .ci/run installs them when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(chromedriver))
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _wait_for(check, what: str, timeout: float = 60):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.25)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def watched_sweep(quickstart_sweep):
    """`swanlab watch` started with the exact command the sweep printed: (url, sweep folder, that command)."""
    pytest.importorskip("swanboard", reason="the dashboard needs SwanLab's dashboard extra: pip install -e "
                                            "'.[dashboard]'")
    sweep_dir, launched = quickstart_sweep
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    lines = [line for line in launched.stdout.splitlines() if line.startswith(WATCH_LINE)]
    assert len(lines) == 1, launched.stdout[-3000:]
    command = lines[0][len(WATCH_LINE):]
    program, subcommand, *args = shlex.split(command)
    assert (program, subcommand) == ("swanlab", "watch")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "swanlab", "watch", *args, "--host", "127.0.0.1",
                               "--port", str(port)], cwd=sweep_dir.parent.parent, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        assert server.poll() is None, f"swanlab watch exited: {server.stdout.read()}"
        try:
            with urllib.request.urlopen(url + "/api/v1/project", timeout=5):
                return True
        except OSError:
            return False

    try:
        _wait_for(answers, f"`{command}` to serve {url}")
        yield url, sweep_dir, command
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# The chart of one metric on the dashboard's Charts page: its legend and how many colored pixels it drew.
CHART_JS = """
const section = [...document.querySelectorAll('section.chart-container')]
    .find(s => (s.querySelector('p') || {}).textContent?.trim() === arguments[0]);
if (!section) return null;
section.scrollIntoView();
const legend = [...section.querySelectorAll('.lc-legend-item')].map(item => item.textContent.trim());
let colored = 0;
for (const canvas of section.querySelectorAll('canvas')) {
    const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < pixels.length; i += 4) {
        const [r, g, b, a] = [pixels[i], pixels[i + 1], pixels[i + 2], pixels[i + 3]];
        if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 40) colored++;  // lines, not grey axes
    }
}
return {legend: legend, colored: colored};
"""


@pytest.mark.slow
def test_swanlab_watch_lists_every_trial_and_draws_their_final_score(browser, watched_sweep, tmp_path):
    import json

    from selenium.webdriver.common.by import By

    url, sweep_dir, command = watched_sweep
    assert command == "swanlab watch sweep_results/quickstart/swanlog"
    trials = {f"quickstart-{p.name.removeprefix('trial_')}" for p in sweep_dir.glob("trial_*")}
    assert len(trials) == 8

    # The dashboard's own API: every trial is an experiment of the sweep's project, ended, in its own color.
    with urllib.request.urlopen(url + "/api/v1/project", timeout=30) as response:
        project = json.load(response)["data"]
    assert project["name"] == "hypir-quickstart"
    experiments = {e["name"]: e for e in project["experiments"]}
    assert set(experiments) == trials
    assert {name: e["status"] for name, e in experiments.items()} == dict.fromkeys(trials, 1)  # 1 = finished
    assert len({e["light"] for e in experiments.values()}) == len(trials)

    # In the browser: the sidebar lists every trial; the val/Final_Score chart holds all of them and is drawn.
    browser.get(url + "/charts")
    _wait_for(lambda: all(name in browser.find_element(By.TAG_NAME, "body").text for name in trials),
              "the sidebar to list every trial")
    (search,) = _wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "input[placeholder='Search Chart...']"),
                          "the Charts page's search box")
    search.send_keys("val/Final_Score")
    chart = _wait_for(lambda: (c := browser.execute_script(CHART_JS, "val/Final_Score")) and c["colored"] > 200 and c,
                      "the val/Final_Score chart to be drawn")
    assert set(chart["legend"]) == trials, chart["legend"]
    screenshot = tmp_path / "swanlab-watch-final-score.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"screenshot of `{command}`: {screenshot}")


@pytest.mark.slow
def test_analyze_report_renders_every_plot(browser, quickstart_sweep, tmp_path):
    sweep_dir, launched = quickstart_sweep
    assert launched.returncode == 0, launched.stderr[-3000:]
    out = tmp_path / "analysis"
    analysed = subprocess.run([sys.executable, str(ROOT / "analyze.py"), "sweep_results/quickstart", "--out",
                               str(out)], cwd=sweep_dir.parent.parent, capture_output=True, text=True, timeout=600)
    assert analysed.returncode == 0, analysed.stdout[-3000:] + analysed.stderr[-3000:]
    if (sweep_dir / "swanlog" / "runs.swanlab").exists():  # the sweep logged in SwanLab's local mode
        assert f"{WATCH_LINE}swanlab watch sweep_results/quickstart/swanlog" in analysed.stdout

    browser.get((out / "report.html").as_uri())
    images = _wait_for(lambda: browser.execute_script(
        "const imgs = [...document.images]; return imgs.length && imgs.every(i => i.complete) && "
        "imgs.map(i => [i.previousElementSibling.textContent, i.naturalWidth, i.naturalHeight]);"),
        "the report's images")
    # The audit's figure is drawn when enough trials ran the full budget (how many did is ASHA's arrival order).
    audited = (out / "early_stopping_audit.csv").read_text().strip().count("\n") > 0
    assert [heading for heading, _, _ in images] == ["Early-stopping audit"] * audited + [
        "Score per round", "Parameter importance", "PSNR against LPIPS", "Per degradation type", "Parallel coordinates"]
    for heading, width, height in images:
        assert width > 0 and height > 0, f"the plot under '{heading}' does not render"
    assert "figure missing" not in browser.page_source
    screenshot = tmp_path / "report.png"
    assert browser.save_screenshot(str(screenshot))
    print(f"screenshot of {out / 'report.html'}: {screenshot}")
