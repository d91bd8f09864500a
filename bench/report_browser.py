"""report.html in a real browser: headless Chromium loads it, and a broken page fails.

    python bench/report_browser.py [--fit OUT/] [--screenshot docs/images/report.png]
                                   [--out bench/results/report_browser.json]

Without ``--fit`` it first runs the README's main command on data/run042 with ``--fringes`` (the
pool cache as usual) into a temporary directory. Then Chromium (the system's ``chromium``,
driven by Playwright: ``pip install playwright``; Playwright's own browser download is not
needed) opens ``OUT/report.html`` from disk with the network blocked, and the page fails when:
the file exceeds 2 MB; the browser reports a console error or a page error; any request leaves
the page (the report must be self-contained); an image did not decode (``naturalWidth`` 0); or
the summary table lacks a row a physicist looks for (atoms, centroid, widths, the truth, the
shot-noise limit, fringes, converged, versions). It saves the findings as JSON, a full-page
screenshot, and exits 1 on a broken page.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.benchlib import machine_info, save_json  # noqa: E402

MAX_BYTES = 2 * 2**20
#: Row labels of the report's summary table that a fit of a simulated run must show.
EXPECTED_ROWS = ("atoms", "centroid x, y, z", "width σ x, y, z", "against the truth (fit − truth)",
                 "shot-noise limit of a Gaussian cloud (Cramér–Rao, 1 σ)", "converged", "versions")
#: … and a fit with --fringes.
FRINGES_ROW = "fringes (recon.analysis.fringes)"


def browser_missing() -> str | None:
    """Why the check cannot run here (None: it can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f"playwright is not installed ({err}); pip install playwright"
    if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
        return "no chromium on PATH (e.g. apt-get install chromium)"
    return None


def check_report(report: Path, *, screenshot: Path | None = None, expected_rows=EXPECTED_ROWS) -> dict:
    """Open ``report`` in headless Chromium; what was found (``problems`` empty: a sound page)."""
    from playwright.sync_api import sync_playwright

    problems: list[str] = []
    size = report.stat().st_size
    if size > MAX_BYTES:
        problems.append(f"report.html is {size / 2**20:.2f} MB, over 2 MB")
    console, external = [], []
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: console.append(f"page error: {e}"))

        def route(r):  # the report must not reach out: every request but the file itself is refused
            if r.request.url == report.resolve().as_uri():
                r.continue_()
            else:
                external.append(r.request.url[:200])
                r.abort()

        page.route("**/*", route)
        page.goto(report.resolve().as_uri(), wait_until="load")
        images = page.eval_on_selector_all(
            "img", "els => els.map(e => ({alt: e.alt, complete: e.complete, width: e.naturalWidth}))")
        rows = page.eval_on_selector_all("tr", "rows => rows.map(r => r.innerText)")
        title = page.title()
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=False)
        browser.close()
    broken = [i["alt"] or "(no alt)" for i in images if not (i["complete"] and i["width"] > 0)]
    labels = [r.split("\t")[0].strip() for r in rows]
    missing = [row for row in expected_rows if row not in labels]
    problems += [f"console: {c}" for c in console]
    problems += [f"request leaves the page: {u}" for u in external]
    problems += [f"image did not decode: {b}" for b in broken]
    problems += [f"summary row missing: {m}" for m in missing]
    return {"report": str(report), "bytes": size, "title": title, "images": len(images),
            "broken_images": broken, "table_rows": len(rows), "missing_rows": missing,
            "console_errors": console, "external_requests": external, "problems": problems}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fit", type=Path, help="a fit output directory (default: fit data/run042 anew)")
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "images" / "report.png")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "report_browser.json")
    args = parser.parse_args()
    missing = browser_missing()
    if missing:
        raise SystemExit(f"report_browser: {missing}")
    fit = args.fit
    command = None
    if fit is None:
        fit = Path(tempfile.mkdtemp(prefix="bench_report_")) / "fit"
        command = ["recon", "fit", "--views", "data/run042", "--out", str(fit), "--fringes", "--quiet"]
        subprocess.run([sys.executable, "-m", "recon.cli", *command[1:]], cwd=ROOT, check=True)
    expected = EXPECTED_ROWS + ((FRINGES_ROW,) if command else ())
    found = check_report(fit / "report.html", screenshot=args.screenshot, expected_rows=expected)
    save_json(args.out, {"fit_command": " ".join(command) if command else f"--fit {fit}", **found,
                         "screenshot": str(args.screenshot),
                         "machine": machine_info()})
    print(json.dumps({k: v for k, v in found.items() if k != "report"}, indent=1, ensure_ascii=False))
    if found["problems"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
