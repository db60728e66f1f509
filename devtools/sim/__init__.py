"""Fleet simulator: realistic GPU usage for a period, and its independent ground truth."""
