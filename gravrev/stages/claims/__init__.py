"""Stage 07, claims: each paper claim against this run, per history and pooled (the report
words why)."""
