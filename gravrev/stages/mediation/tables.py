"""The names of stage 06's saved tables (torch-free, so the chapter reads them without the runs)."""

TABLES = ("baseline", "sweeps", "patching", "logit_lens", "controls", "directions", "readout",
          "readout_tokens")
# The `checkpoint` labels of the logit lens's table, in its order: safe, helpful, fine-tuned.
LENS_CHECKPOINTS = ("θ_S", "θ_H", "θ_T")
