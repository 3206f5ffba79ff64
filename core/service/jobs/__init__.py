"""A job's life: its options, its states and lease (lifecycle), the sweeper, and its run
(pipeline): the phases a worker goes through, the verdict and the evaluation's budget."""
