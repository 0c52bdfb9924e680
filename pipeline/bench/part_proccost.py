"""proccost: the kernel's own time in the process table's tracepoints per fork, exec and
exit, and what the file-creation programs cost the opens that create nothing (proccost.py,
from the kernel's BPF statistics)."""

from __future__ import annotations

from .figures import PartResult
from .parts import Context

TITLE = "proccost: kernel time of the process table's tracepoints per fork, exec and exit"


def run(ctx: Context) -> PartResult:
    from .proccost import measure

    procs = int(ctx.pick(500, 20_000))
    rounds = []
    ctx.progress.start("proccost", ctx.rounds * 2)
    for _ in range(ctx.rounds):
        for keep in (False, True):
            rounds.append(measure(procs=procs, ancestors=keep))
            ctx.progress.tick()
    res = PartResult(raw={"procs": procs, "rounds": rounds})
    for keep in (False, True):
        rs = [r for r in rounds if r["ancestors"] == keep]
        q = res.question(
            "What does the process table cost a process's fork, exec and exit"
            + (" with --ancestors (exits kept for the reader)?" if keep else "?"),
            note=f"{procs:,} children forked 4 at a time that exit at once, then {procs:,} "
                 "that exec /bin/true; each program's average run time (for the opens: "
                 "the file-creation programs' averages, summed, over the dynamic loader's "
                 "opens in the exec phase)")
        q.add("fork (proc_fork)", "ns", [r["ns_per_fork"] for r in rs])
        q.add("exec (proc_exec)", "ns", [r["ns_per_exec"] for r in rs])
        q.add("exit (proc_exit)", "ns", [r["ns_per_exit"] for r in rs])
        q.add("forks without memory (nomem)", "forks",
              [float((r["process_table"] or {}).get("nomem", 0)) for r in rs])
        # the file-creation programs' runs for the dynamic loader's opens in the exec phase
        q.add("an open that creates nothing (while processes exec)", "ns",
              [sum(p["avg_ns"] for p in r["syscall_programs_in_exec_phase"].values()
                   if p["run_cnt"] >= procs) for r in rs])
    return res
