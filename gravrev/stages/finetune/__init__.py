"""Stage 02, finetune: benign fine-tuning of every history and seed, the controls, early runs."""
