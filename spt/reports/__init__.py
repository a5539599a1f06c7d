"""Reports from per-image evaluation records: metric tables, seed spread, significance.

* ``tables.metric_tables``: per backbone and prompt mode, methods x datasets, markdown /
  LaTeX / CSV renderers;
* ``stats.compare``: the reference (SPT) against every baseline, paired tests with Holm
  correction; ``significance_report`` renders it as markdown and JSON;
* ``aggregate.seed_spread``: mean / std / min / max over seeds of each dataset mean.
"""
