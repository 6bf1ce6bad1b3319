"""The paper's studies, one module each, on top of the pipeline: `reference` (LoRA and full fine-tuning
ceilings on the same data), `sweep` (Optuna search over the recipe, trials as MLflow child runs in
`sweep_runs`), `transfer` (start from the most similar task's champion, found by `similarity`) and `ensemble`
(K prompts scored together). The scoring and artifact code that serving also needs stays below, in
`ptune.evaluation.ensemble` and `ptune.model.ensemble_artifact`."""
