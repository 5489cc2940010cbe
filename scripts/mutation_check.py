#!/usr/bin/env python
"""The suite's own mutation check: plant each bug of ``scripts/mutants.txt``, one at a time, in a
scratch copy of the repository and run the tests that must catch it. Every mutant must be killed.

A mutant is a single semantic bug a reviewer might plant (a swapped height and width, a wrong
threshold, a dropped term, a wrong class channel...). The repository's files (``git ls-files``:
tracked and new unignored ones, as they are in the working tree) are copied to a scratch folder
once; for each mutant the script replaces its ``find`` text (which must occur exactly once in its
file) by its ``replace`` text there, runs ``python -m pytest -q -x <tests>`` in the copy with
this interpreter, and puts the file back. A mutant is

* killed    when its tests fail (pytest exit code 1, or 2 for a collection error),
* survived  when they pass: the suite cannot see that bug,
* error     when pytest could not run them (bad node id, nothing collected, timeout).

First the tests of all selected mutants run once unmutated (the baseline): a test that already
fails would "kill" every mutant. The exit code is 0 only if every mutant was killed; a mutant
whose ``find`` text is no longer in its file (the code changed) is reported by name and makes the
exit code non-zero too, so the list cannot rot silently.

Not part of ``make test`` (it takes a while): ``make mutation-check`` runs it.

    python scripts/mutation_check.py                # every mutant
    python scripts/mutation_check.py --list         # the list, with stale targets marked
    python scripts/mutation_check.py --only rpn-nms-threshold fast-paste-rounding
    python scripts/mutation_check.py -j 2           # two mutants at a time (two scratch copies)

The list's format (``scripts/mutants.txt``): blocks of ``key: value`` lines, each block opened by
``[mutant-id]``; keys ``file``, ``find``, ``replace``, ``tests`` (space-separated test files or
node ids) and ``why`` (one line). ``#`` starts a comment line. Values are taken verbatim after
``key: `` (leading and trailing spaces stripped), one line each; in ``find`` and ``replace`` the two
characters ``\\n`` stand for a line break (a decorator and the line it decorates).
"""
import argparse
import concurrent.futures
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LIST = os.path.join(ROOT, "scripts", "mutants.txt")
KEYS = ("file", "find", "replace", "tests", "why")


class ListError(ValueError):
    """The mutant list is malformed; the message names the line."""


class Mutant:
    def __init__(self, ident, line, fields):
        self.id = ident
        self.line = line  # where its block starts in the list, for messages
        self.file = fields["file"]
        self.find = fields["find"]
        self.replace = fields["replace"]
        self.tests = fields["tests"].split()
        self.why = fields["why"]

    def problem(self, root):
        """Why this mutant cannot be planted in ``root`` (None if it can)."""
        path = os.path.join(root, self.file)
        if not os.path.isfile(path):
            return f"file {self.file} does not exist"
        count = open(path, encoding="utf-8").read().count(self.find)
        if count == 0:
            return (f"target not found: {self.file} no longer contains the text `{self.find}` "
                    f"(the code changed: update this mutant's find/replace in the list, line {self.line})")
        if count > 1:
            return (f"target ambiguous: `{self.find}` occurs {count} times in {self.file} "
                    f"(make it unique in the list, line {self.line})")
        missing = [t for t in self.tests if not os.path.exists(os.path.join(root, t.split("::")[0]))]
        if missing:
            return f"test file(s) {', '.join(missing)} do not exist (list line {self.line})"
        return None


def parse_mutants(path):
    """[Mutant] of a list file; raises ListError naming the line of any problem."""
    mutants, ident, start, fields = [], None, 0, {}

    def close():
        if ident is None:
            return
        absent = [k for k in KEYS if k not in fields]
        if absent:
            raise ListError(f"{path}:{start}: mutant '{ident}' lacks {', '.join(absent)}")
        if fields["find"] == fields["replace"]:
            raise ListError(f"{path}:{start}: mutant '{ident}' replaces its text by itself")
        mutants.append(Mutant(ident, start, fields))

    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip("\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if line.startswith("[") and line.rstrip().endswith("]"):
                close()
                ident, start, fields = line.strip()[1:-1].strip(), number, {}
                if not ident or any(m.id == ident for m in mutants):
                    raise ListError(f"{path}:{number}: empty or repeated mutant id '{ident}'")
                continue
            key, sep, value = line.partition(":")
            key = key.strip()
            if ident is None or not sep or key not in KEYS:
                raise ListError(f"{path}:{number}: expected '[id]' or one of {', '.join(KEYS)} followed by ':', "
                                f"got: {line}")
            if key in fields:
                raise ListError(f"{path}:{number}: '{key}' given twice for mutant '{ident}'")
            value = value.strip()
            fields[key] = value.replace("\\n", "\n") if key in ("find", "replace") else value
    close()
    return mutants


def tracked_files(root):
    """The repository's files: tracked ones and new ones not ignored (a test being written)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True).stdout
    return [p for p in out.decode().split("\0") if p]


def make_scratch_copy(root, files, parent):
    """Copy the tracked files (working-tree content) of ``root`` into a new folder under ``parent``."""
    dest = tempfile.mkdtemp(prefix="scratch-", dir=parent)
    for rel in files:
        src = os.path.join(root, rel)
        if not os.path.isfile(src):  # deleted in the working tree
            continue
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy2(src, os.path.join(dest, rel))
    return dest


def run_pytest(copy, tests, timeout):
    """(exit code or None on timeout, seconds, output) of pytest on ``tests`` inside ``copy``."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")  # no stale .pyc of a mutated module
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        return proc.returncode, time.monotonic() - start, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        output = (e.stdout or b"") + (e.stderr or b"")
        return None, time.monotonic() - start, output.decode(errors="replace") if isinstance(output, bytes) else output


def verdict(code):
    if code in (1, 2):
        return "killed"
    if code == 0:
        return "survived"
    return "error"


def check_mutant(mutant, copy, timeout):
    """Plant ``mutant`` in ``copy``, run its tests, restore the file; returns (verdict, seconds, output)."""
    path = os.path.join(copy, mutant.file)
    original = open(path, encoding="utf-8").read()
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original.replace(mutant.find, mutant.replace, 1))
        code, seconds, output = run_pytest(copy, mutant.tests, timeout)
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    if code is None:
        return "error", seconds, f"timed out after {timeout} s\n{output}"
    return verdict(code), seconds, output


def first_failure(output):
    """The node id of the first failing test in pytest's short summary ("" if none is named)."""
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" ", 1)[1].split(" - ")[0]
    return ""


def tail(text, lines=15):
    return "\n".join("      " + line for line in text.strip().splitlines()[-lines:])


def build_parser():
    """This script's command line (no side effects: the docs' test checks documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mutants", default=DEFAULT_LIST, help="the list (default scripts/mutants.txt)")
    parser.add_argument("--only", nargs="+", metavar="ID", help="check only these mutants")
    parser.add_argument("--list", action="store_true", help="print the mutants (stale targets marked) and exit")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="mutants checked at a time (default 1)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run of the tests")
    parser.add_argument("--timeout", type=float, default=1200, help="seconds per pytest run (default 1200)")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    try:
        mutants = parse_mutants(args.mutants)
    except (ListError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    if args.only:
        unknown = sorted(set(args.only) - {m.id for m in mutants})
        if unknown:
            print(f"Error: unknown mutant id(s) {', '.join(unknown)}; --list shows them.", file=sys.stderr)
            return 2
        mutants = [m for m in mutants if m.id in args.only]
    problems = {m.id: m.problem(ROOT) for m in mutants}

    if args.list:
        for m in mutants:
            mark = f"   !! {problems[m.id]}" if problems[m.id] else ""
            print(f"{m.id}\n    {m.file}: `{m.find}` -> `{m.replace}`\n    tests: {' '.join(m.tests)}\n"
                  f"    why: {m.why}{mark}")
        print(f"{len(mutants)} mutants, {sum(1 for p in problems.values() if p)} stale.")
        return 1 if any(problems.values()) else 0

    stale = [m for m in mutants if problems[m.id]]
    for m in stale:
        print(f"STALE    {m.id}: {problems[m.id]}", flush=True)
    runnable = [m for m in mutants if not problems[m.id]]
    start = time.monotonic()
    files = tracked_files(ROOT)
    parent = tempfile.mkdtemp(prefix="maskplus-mutation-")
    results = {}
    try:
        copies = [make_scratch_copy(ROOT, files, parent) for _ in range(min(max(1, args.jobs), len(runnable)))]
        if runnable and not args.no_baseline:
            tests = sorted({t for m in runnable for t in m.tests})
            print(f"Baseline: the {len(tests)} test files/ids of {len(runnable)} mutants, unmutated ...", flush=True)
            code, seconds, output = run_pytest(copies[0], tests, args.timeout * 3)
            if code != 0:
                print(f"Error: the tests fail without any mutant (exit code {code}, {seconds:.0f} s); fix them "
                      f"first, or every mutant would count as killed:\n{tail(output, 30)}", file=sys.stderr)
                return 2
            print(f"Baseline passed in {seconds:.0f} s.", flush=True)
        free = queue.Queue()
        for c in copies:
            free.put(c)

        def job(mutant):
            copy = free.get()
            try:
                return check_mutant(mutant, copy, args.timeout)
            finally:
                free.put(copy)

        with concurrent.futures.ThreadPoolExecutor(max(1, len(copies))) as pool:
            futures = {pool.submit(job, m): m for m in runnable}
            for future in concurrent.futures.as_completed(futures):
                m = futures[future]
                result, seconds, output = future.result()
                results[m.id] = (result, seconds)
                caught_by = f": {first_failure(output)}" if result == "killed" else ""
                print(f"{result.upper():8s} {m.id} ({seconds:.0f} s){caught_by}", flush=True)
                if result != "killed":
                    print(f"    {m.file}: `{m.find}` -> `{m.replace}`\n    why: {m.why}\n"
                          f"    tests: {' '.join(m.tests)}\n{tail(output)}", flush=True)
    finally:
        shutil.rmtree(parent, ignore_errors=True)

    counts = {k: sum(1 for r, _ in results.values() if r == k) for k in ("killed", "survived", "error")}
    minutes = (time.monotonic() - start) / 60
    print(f"\n{len(mutants)} mutants: {counts['killed']} killed, {counts['survived']} survived, "
          f"{counts['error']} errors, {len(stale)} stale (target not found or ambiguous); {minutes:.1f} min in all.")
    for kind in ("survived", "error"):
        ids = [i for i, (r, _) in results.items() if r == kind]
        if ids:
            print(f"  {kind}: {', '.join(sorted(ids))}")
    if stale:
        print(f"  stale: {', '.join(m.id for m in stale)} (update scripts/mutants.txt after the code changed)")
    return 0 if counts["killed"] == len(mutants) else 1


if __name__ == "__main__":
    sys.exit(main())
