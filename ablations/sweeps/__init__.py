"""The machinery behind ``ablations/``: sweeps, tables and parity; the paper folders hold only data.

Map (imports run downwards only): :mod:`.errors` (``SweepError``) and :mod:`.point_results`
(the ``results.json`` a point writes, W&B logging of a program's figures) are the base;
:mod:`.engine` wraps W&B's open-source sweep engine (schema checks, random/bayes proposals);
:mod:`.grid` reads a sweep file and its ``.paper.yaml`` side file into grid points and commands;
:mod:`.runner` runs point commands as child processes (log files, signals, timeouts);
:mod:`.collect` finds finished points and reads their metrics; :mod:`.local` plans and runs the
points of a sweep here; :mod:`.sweep` is the ``mfif-sweep`` CLI (local, SLURM array, W&B export);
:mod:`.plots` draws the swept-setting curves; :mod:`.tables` (``mfif-tables``) builds Markdown/LaTeX
tables beside the printed values and logs them to W&B; :mod:`.parity` (``mfif-parity``) regenerates
printed rows from released weights and published images; :mod:`.trained` (``mfif-trained``) trains
each paper with its cpu profile and scores it beside those yardsticks (the per-paper table in
:mod:`.trained_specs`, scoring in :mod:`.trained_scoring`, outputs and the report in
:mod:`.trained_report`, sweeps on the trained models in :mod:`.trained_studies`). The scripts
``ablations/sweep.py``, ``tables.py``, ``parity.py`` and ``trained.py`` are the same commands run by path.
"""
