"""Local replica of the course data API: the same HTTP contract, served from a CSV on this machine.

It lets the whole stack (and CI) run without the course network: the DAG
collects batch after batch exactly as it would from the course API.
"""
