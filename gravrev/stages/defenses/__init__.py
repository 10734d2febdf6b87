"""v_rev against standard defenses at matched task cost."""
