"""report.md from results.json: a headline table of every figure that has a target, then one
table per question, each figure with its median, its min-max over the rounds, its target and
whether the median meets it."""

from __future__ import annotations

from typing import Any

from .figures import fmt, fmt_range

HEAD = "| figure | median | min-max | rounds | target | |\n| --- | --- | --- | --- | --- | --- |"


def _verdict(f: dict[str, Any]) -> str:
    if f["met"] is None:
        return ""
    return "met" if f["met"] else "**not met**"


def _row(f: dict[str, Any], label: str | None = None) -> str:
    u = f["unit"]
    target = "" if f["target"] is None else f"{f['target']['cmp']} {fmt(f['target']['value'], u)}"
    spread = fmt_range(f["min"], f["max"], u)
    return (f"| {label or f['name']} | {fmt(f['median'], u)} | {spread} | {len(f['rounds'])} "
            f"| {target} | {_verdict(f)} |")


def _sentence(note: str) -> str:
    """A note as a sentence; a note opening with a name (run_time_ns) keeps its case."""
    first = note.split(" ", 1)[0]
    head = note[0].upper() if first.isalpha() else note[0]
    return head + note[1:] + "."


def headline(res: dict[str, Any]) -> str:
    """Every figure with a target, one row each: the table the README shows."""
    rows = [HEAD.replace("| figure |", "| part | figure |").replace("| --- |", "| --- | --- |", 1)]
    for name, part in res["parts"].items():
        for q in part.get("questions", []):
            for f in q["figures"]:
                if f["target"] is not None:
                    rows.append(f"| {name} " + _row(f))
    return "\n".join(rows)


def render(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [
        "# arena-pipeline benchmark",
        "",
        f"- command: `{res['command']}`",
        f"- mode: {res['mode']}"
        + (" (a smoke test: small sizes and few rounds, figures not to be quoted)"
           if res["mode"] == "quick" else ""),
        f"- started {res['started']}, took {res['seconds']:.0f} s",
        f"- machine: {m['host']}, Linux {m['kernel']}, {m['arch']}, {m['cpus']} CPUs "
        f"({m['cpu_model']}), {m['memory_gib']:.1f} GiB",
        f"- every figure: the median of {res['rounds']} rounds (contenders alternate round "
        "by round), with the min-max over the rounds; targets are judged on the median",
        "",
        "## Targets",
        "",
        headline(res),
        "",
    ]
    for name, part in res["parts"].items():
        out += [f"## {name}: {part['title']}", ""]
        if part["status"] != "ok":
            out += [f"**Did not run**: {part['error']}", ""]
        for s in part.get("skipped", []):
            out.append(f"- left out: {s['what']}: {s['reason']}")
        if part.get("skipped"):
            out.append("")
        for q in part.get("questions", []):
            out += [f"### {q['title']}", ""]
            if q["note"]:
                out += [_sentence(q["note"]), ""]
            out.append(HEAD)
            out += [_row(f) for f in q["figures"]]
            out.append("")
        if part.get("plots"):
            out += [" ".join(f"![{p}]({p}.png)" for p in part["plots"]), ""]
    return "\n".join(out)
