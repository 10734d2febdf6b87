"""Stage 08, sweep: vary the depths of H and S, fine-tune each history, measure reversion."""
