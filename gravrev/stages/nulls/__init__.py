"""Stage 04, nulls: every run-step pair against isotropic and anisotropic nulls and controls."""
