"""Where a user's model runs: bubblewrap and its limits (runner), the seccomp filter, and the
upload check run inside it (validation, validation_child)."""
