"""What the API answers, as typed dataclasses (`catalog`, `jobs`, `evaluation`), and the options
of a job as the SDK takes them (`options`); the package `robustify` exports them all.

Each answer keeps the JSON it came from in `raw` (fields a newer server adds are there too).
"""
