"""Where a user's model runs: bubblewrap and its limits (runner, with cgroups for the process
count, limits for what the sandboxed process sets on itself, host for the folders and devices
it may see), the seccomp filter, and the upload check run inside it (validation, its warm
children in checkers, validation_child)."""
