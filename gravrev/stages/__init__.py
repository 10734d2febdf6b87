"""One module per pipeline stage and notebook; each has `run(cfg, paths)` and `load(cfg, paths)`.

`run` computes and writes the stage's outputs (the DVC compute step); `load` reads them back
as the stage's result dataclass (what the chapter's notebook renders). Stages import the
science library, never each other.
"""
