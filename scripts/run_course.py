"""Run every notebook headless, in order, into a new folder runs/<timestamp>-<profile>/ (what `make course` does)."""
import argparse

from helpers.config import PROFILES
from helpers.report import build_report
from helpers.runs import course_notebooks, run_course

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="workshop", choices=PROFILES)
    parser.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 00 02 (default: all)")
    args = parser.parse_args()
    notebooks = [nb for nb in course_notebooks() if not args.only or nb.name.startswith(tuple(args.only))]
    run_dir, finished = run_course(args.profile, notebooks)
    markdown, page = build_report(run_dir)  # also after a failure: it names the cell and keeps what finished
    print(f"Report: {markdown}\n        {page} (open it in a browser)")
    raise SystemExit(0 if finished else 1)
