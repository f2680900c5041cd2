#!/usr/bin/env python
"""Regenerate the README's screenshots of a running sweep: Ray's table, swanlab watch, analyze.py's report.

  python docs/make_screenshots.py        (about 3 minutes on 2 CPU cores)

Runs sweeps/quickstart.yaml in a temporary folder and, once some trials have ended while others
still train, takes each view with headless Chromium (Debian: apt-get install chromium
chromium-driver; pip install selenium) into docs/*.png. Needs the dashboard extra.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def browser(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for flag in FLAGS + [f"--user-data-dir={tempfile.mkdtemp()}", f"--window-size={width},{height}"]:
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))


def save_small(png: Path, out: Path, width: int) -> None:
    """Scaled to `width` and reduced to 128 colors: a few tens of kB in git."""
    image = Image.open(png).convert("RGB")
    image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
    image.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"{out.relative_to(ROOT)}: {out.stat().st_size // 1024} kB")


def ended_trials(sweep: Path) -> tuple[int, int]:
    ended = running = 0
    for summary in sweep.glob("trial_*/summary.json"):
        try:
            status = json.loads(summary.read_text()).get("status", "running")
        except ValueError:
            continue
        ended += status != "running"
        running += status == "running"
    return ended, running


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="hypir-screens-"))
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="150")
    log = open(work / "launch.log", "w")
    spec = ROOT / "sweeps" / "quickstart.yaml"
    sweep_process = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), str(spec)], cwd=work, env=env,
                                     stdout=log, stderr=subprocess.STDOUT)
    sweep = work / "sweep_results" / "quickstart"
    try:
        while ended_trials(sweep)[0] < 4 or ended_trials(sweep)[1] < 1:
            if sweep_process.poll() is not None:
                raise SystemExit(f"the sweep ended first; see {work / 'launch.log'}")
            time.sleep(1)
        time.sleep(3)  # let Ray reprint its table

        # 1. Ray's table: the newest one the driver printed, as a terminal shows it.
        text = re.sub(r"\x1b\[[0-9;]*m", "", (work / "launch.log").read_text())
        tables = re.findall(r"^Trial status:.*?^╰[─]+╯$", text, flags=re.S | re.M)
        page = work / "table.html"
        page.write_text("<html><body style='margin:0;background:#1e1e1e'><pre id='t' style='margin:0;padding:12px;"
                        "display:inline-block;color:#d4d4d4;font:13px DejaVu Sans Mono,monospace'>"
                        f"{html.escape(tables[-1])}</pre></body></html>")
        driver = browser(1500, 700)
        driver.get(page.as_uri())
        driver.find_element("id", "t").screenshot(str(work / "table.png"))
        save_small(work / "table.png", DOCS / "ray-table.png", 1100)

        # 2. swanlab watch, as the sweep's own hint says, with the val/Final_Score chart searched for.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = subprocess.Popen([sys.executable, "-m", "swanlab", "watch", "sweep_results/quickstart/swanlog",
                                   "--host", "127.0.0.1", "--port", str(port)], cwd=work,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            for _ in range(120):
                try:
                    urllib.request.urlopen(url + "/api/v1/project", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
            driver.set_window_size(1400, 820)
            driver.get(url + "/charts")
            time.sleep(4)
            driver.find_element("css selector", "input[placeholder='Search Chart...']").send_keys("val/")
            time.sleep(4)
            driver.save_screenshot(str(work / "watch.png"))
            save_small(work / "watch.png", DOCS / "swanlab-watch.png", 1000)
        finally:
            server.terminate()
            server.wait(timeout=30)

        # 3. analyze.py on the running sweep: its report.html.
        subprocess.run([sys.executable, str(ROOT / "analyze.py"), "sweep_results/quickstart"], cwd=work, env=env,
                       check=True, stdout=subprocess.DEVNULL)
        driver.set_window_size(1400, 1000)
        driver.get((sweep / "analysis" / "report.html").as_uri())
        time.sleep(1)
        driver.save_screenshot(str(work / "report.png"))
        save_small(work / "report.png", DOCS / "analyze-report.png", 1000)
        driver.quit()
    finally:
        sweep_process.terminate()
        sweep_process.wait(timeout=120)
        log.close()
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
