"""Many files: `text2fx batch MANIFEST -o OUTDIR`, resumable, on local workers or a Ray cluster.

    from text2fx.batch import run_batch
    outcome = run_batch("items.csv", "out/", {"chain": "eq"}, workers=2)

`manifest` (rows read and checked), `runner` (plan, group, schedule, summary), `tasks` (what a worker runs),
`workers` (this process, local processes, Ray actors), `summary` (the table), `cli` (the subcommand).
"""

from text2fx.batch.runner import BatchOutcome, run_batch

__all__ = ["BatchOutcome", "run_batch"]
