"""How good a prompt is: metrics, rank-classification and generation scoring of a soft prompt (or a hard
prefix) on a split, the hard-prompt baselines on the same frozen model, and the report format
(markdown, flat metrics JSON, chart, predictions)."""
