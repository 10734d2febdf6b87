"""Stage 03, vrev: v_rev per history, and the alignment of every run's drift with it."""
