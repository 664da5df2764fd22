"""Check that a Snakemake HTML report opens in a headless browser and shows every figure.

    python -m hades.analysis.report_check results/report.html [--min-images N] [--require-browser]

Snakemake's report (`snakemake --report results/report.html`) is a single self-contained page: a
React app with every result embedded as a data URI. A file can be present in the report and
still show nothing (a truncated PNG, a wrong MIME type, a script error), so we open the report
in headless chromium and let a small script, injected into a temporary copy, do what a user
does: wait for the app to render, then, for every image result, switch the app's view to it
(the report's own "eye" button code path) and wait until the `<img>` has decoded with a non-zero
size. HTML results (tables) must decode to a non-empty page. The script writes its findings as
JSON into the DOM, which chromium prints with --dump-dom.

Exit status: 0 = every image loads (or no browser and --require-browser not given: a clear SKIP
line is printed), 1 = the check failed, 2 = the report file is missing, 3 = no browser but one
was required.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hades.io import write_json

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
RESULT_ID = "hades-report-check"

_CAPTURE_ERRORS = """<script>
window.__hadesErrors = [];
window.addEventListener('error', function (e) { window.__hadesErrors.push(String(e.message || e)); });
window.addEventListener('unhandledrejection', function (e) { window.__hadesErrors.push('unhandled rejection: ' + String(e.reason)); });
</script>"""

_CHECK = """<script>
(function () {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  async function waitFor(fn, ms) {
    const t0 = Date.now();
    while (Date.now() - t0 < ms) { const v = fn(); if (v) return v; await sleep(20); }
    return fn();
  }
  function decodeDataUri(uri) {
    const comma = uri.indexOf(',');
    const bytes = Uint8Array.from(atob(uri.slice(comma + 1)), c => c.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  }
  async function run() {
    const out = {app_rendered: false, results: [], js_errors: []};
    try {
      const root = document.querySelector('#app');
      out.app_rendered = !!(await waitFor(() => root && root.children.length > 0, 10000));
      const entries = typeof results === 'undefined' ? {} : results;
      for (const [path, entry] of Object.entries(entries)) {
        const mime = entry.mime_type || '';
        const rec = {path: path, name: entry.name, mime: mime, has_caption: !!(entry.caption && entry.caption.trim())};
        if (mime.startsWith('image/')) {
          rec.kind = 'image';
          app.setView({content: 'img', contentPath: entry.data_uri, resultPath: path});
          const img = await waitFor(() => Array.from(document.querySelectorAll('#app img'))
              .find(i => i.src === entry.data_uri && i.complete), 10000);
          rec.shown = !!img;
          rec.width = img ? img.naturalWidth : 0;
          rec.height = img ? img.naturalHeight : 0;
          rec.ok = rec.shown && rec.width > 0 && rec.height > 0;
        } else if (mime === 'text/html') {
          rec.kind = 'html';
          let text = '';
          try { text = decodeDataUri(entry.data_uri); } catch (e) { rec.error = String(e); }
          rec.has_table = text.includes('<table');
          rec.ok = text.trim().length > 0;
        } else {
          rec.kind = 'other';
          rec.ok = !!entry.data_uri;
        }
        out.results.push(rec);
      }
    } catch (e) {
      out.js_errors.push('check script: ' + String(e));
    }
    out.js_errors = out.js_errors.concat(window.__hadesErrors || []);
    const pre = document.createElement('pre');
    pre.id = '__RESULT_ID__';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  window.addEventListener('load', run);
})();
</script>""".replace("__RESULT_ID__", RESULT_ID)


def find_chromium(explicit: str | None = None) -> str | None:
    """A headless-capable Chromium/Chrome binary: `explicit`, $HADES_CHROMIUM, or on PATH."""
    for name in (explicit, os.environ.get("HADES_CHROMIUM"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    return None


def instrument(report_html: str) -> str:
    """The report with the error catcher first in <head> and the check script before </body>."""
    head = re.search(r"<head[^>]*>", report_html, flags=re.IGNORECASE)
    end = report_html.lower().rfind("</body>")
    if head is None or end < 0:
        raise ValueError("not an HTML report: no <head> or </body> tag")
    return (
        report_html[: head.end()]
        + _CAPTURE_ERRORS
        + report_html[head.end() : end]
        + _CHECK
        + report_html[end:]
    )


def check_report(
    report: str | Path, chromium: str | None = None, timeout_s: float = 180.0, min_images: int = 1
) -> dict[str, Any]:
    """Open `report` in headless chromium and return the findings:

    {"ok": bool, "app_rendered": bool, "js_errors": [...], "results": [{"path", "kind", "ok",
     "width", "height", ...}], "n_images": int, "failures": [str], "browser": path}
    """
    browser = find_chromium(chromium)
    if browser is None:
        raise FileNotFoundError(
            "no chromium found (apt-get install chromium, or set HADES_CHROMIUM)"
        )
    text = Path(report).read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="hades-report-check-") as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(instrument(text), encoding="utf-8")
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={Path(tmp) / 'profile'}",
            "--virtual-time-budget=120000",
            "--dump-dom",
            page.as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    match = re.search(rf'<pre id="{RESULT_ID}">(.*?)</pre>', proc.stdout, flags=re.DOTALL)
    if match is None:
        tail = (proc.stderr or "").strip().splitlines()[-5:]
        raise RuntimeError(
            f"the check script did not report back (chromium exit {proc.returncode}); stderr tail: {tail}"
        )
    found = json.loads(html.unescape(match.group(1)))
    failures = []
    if not found["app_rendered"]:
        failures.append("the report app did not render into #app")
    failures += [f"javascript error: {e}" for e in found["js_errors"]]
    for r in found["results"]:
        if not r["ok"]:
            failures.append(f"{r['kind']} result does not load: {r['path']} ({r['mime']})")
    n_images = sum(r["kind"] == "image" for r in found["results"])
    if n_images < min_images:
        failures.append(f"only {n_images} image(s) in the report, expected at least {min_images}")
    return {
        **found,
        "n_images": n_images,
        "failures": failures,
        "ok": not failures,
        "browser": browser,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m hades.analysis.report_check", description=__doc__.splitlines()[0]
    )
    p.add_argument("report", help="the report, e.g. results/report.html")
    p.add_argument(
        "--min-images", type=int, default=1, help="fail if the report holds fewer images"
    )
    p.add_argument(
        "--chromium",
        default=None,
        help="browser binary (default: $HADES_CHROMIUM or chromium on PATH)",
    )
    p.add_argument(
        "--require-browser",
        action="store_true",
        help="fail (exit 3) instead of skipping without a browser",
    )
    p.add_argument("--json", default=None, help="also write the findings to this file")
    args = p.parse_args(argv)

    if not Path(args.report).is_file():
        print(
            f"report check: {args.report} does not exist (make it with `snakemake --report {args.report}`)",
            file=sys.stderr,
        )
        return 2
    if find_chromium(args.chromium) is None:
        msg = "no chromium on PATH (install it with `apt-get install chromium`, or set HADES_CHROMIUM)"
        if args.require_browser:
            print(f"report check: FAIL: {msg}", file=sys.stderr)
            return 3
        print(f"report check: SKIP: {msg}")
        return 0
    res = check_report(args.report, args.chromium, min_images=args.min_images)
    if args.json:
        write_json(args.json, res, sort_keys=False)  # atomically (hades.io)
    kinds: dict[str, int] = {}
    for r in res["results"]:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(
        f"report check: {args.report}: {len(res['results'])} results {kinds}, browser {res['browser']}"
    )
    for r in res["results"]:
        size = f" {r['width']}x{r['height']}" if r["kind"] == "image" else ""
        print(f"  {'ok ' if r['ok'] else 'BAD'} {r['kind']:<5} {r['path']}{size}")
    if res["ok"]:
        print(f"report check: PASS ({res['n_images']} images load)")
        return 0
    for f in res["failures"]:
        print(f"report check: FAIL: {f}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
