"""The `robustify` command and the SDK it uses."""
