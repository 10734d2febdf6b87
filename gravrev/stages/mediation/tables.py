"""Stage 06's saved tables and control counts (torch-free, so the chapter reads them)."""

TABLES = ("baseline", "sweeps", "patching", "logit_lens", "controls", "directions", "readout",
          "readout_tokens")
# The `checkpoint` labels of the logit lens's table, in its order: safe, helpful, fine-tuned.
LENS_CHECKPOINTS = ("θ_S", "θ_H", "θ_T")
# Control directions per kind, each ablated and added like v_rev (a handful: each costs six
# judged generations per history). The refusal direction r is one more.
N_RANDOM, N_COVARIANCE, N_PCS = 3, 3, 3
