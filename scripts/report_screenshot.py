"""Make docs/img/report.png: the report on its built-in defaults, opened in headless Debian Chromium, the top
of the page captured at laptop width. Run it deliberately (tests never write into the tree):

    python scripts/report_screenshot.py [--height 3400]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img" / "report.png"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--height", type=int, default=3400, help="pixels of the page to keep, from the top")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        subprocess.run([sys.executable, "-m", "cloudmatrix.cli.app", "report", "--out", str(page)], check=True)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--disable-background-networking", f"--window-size=1280,{args.height}",
                     f"--user-data-dir={tmp}/profile"):  # fmt: skip
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            driver.get(page.as_uri())
            time.sleep(4)  # let plotly draw every figure
            shot = Path(tmp) / "shot.png"
            driver.save_screenshot(str(shot))
        finally:
            driver.quit()
        with Image.open(shot) as im:
            OUT.parent.mkdir(parents=True, exist_ok=True)
            im.convert("RGB").quantize(colors=128).save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
