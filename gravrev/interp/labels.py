"""The row labels the mediation and patching tables share (torch-free, so a render reads them)."""

# The `layer` of the ablation row that removes each block's own row of v_rev after that block.
EVERY_LAYER = -1
# The `group` of the patching row that patches nothing (the recipient as it is).
NONE = "none"
