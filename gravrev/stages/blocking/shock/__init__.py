"""Stage 05's shock regime: its runs' config and names (regime), its measurements (metrics)."""
