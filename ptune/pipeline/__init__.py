"""The pipeline: the nine steps of one task (`stages`: fetch, prepare, validate, train, evaluate, baselines,
report, register, promote) on a `TaskRun` (`task_run`: a task resolved once from params.yaml), the files DVC
tracks for each task (`dvc_inputs`), `dvc repro` behind a workspace lock (`repro`), and every pinned file the
built-in tasks and models need (`inventory`, for `ptune sources`)."""
