"""Stage 06, mediation: does v_rev carry refusal, and which components carry its loss?"""
