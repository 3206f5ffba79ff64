"""A job's life. Its options (jobconfig), states and lease rules (lifecycle, lease), the
sweeper; and its run on a worker (pipeline), in steps: the run's context (run_context), its
inputs staged for the engine (staging), the conversation with the engine process
(conversation), progress and epochs as they come (progress, epochs, training_reports,
reports), the hardened model and the manifest stored (result, manifest), how it ends
(endings); the verdict and the evaluation's budget (verdict, eval_budget)."""
