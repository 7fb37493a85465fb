"""The study harness: matched-compute comparisons of methods over seeds (`pact study`), resumable, with
its screening, evaluation sets, held-out curves, statistics, report and export."""
