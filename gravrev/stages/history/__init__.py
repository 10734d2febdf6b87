"""Stage 01, history: theta_P once, then one H -> S branch per history seed, and shape checks."""
