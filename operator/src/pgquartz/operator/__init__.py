"""pgquartz's operator: ``PgQuartzJob`` resources become ConfigMaps and CronJobs that run the runner.

A kopf controller, shipped as the ``pgquartz-operator`` distribution. It imports
the runner's job model and planner (``pgquartz.runner.model``, ``pgquartz.runner.plan``)
and nothing else of the runner; the runner never imports it. Both rules are
import-linter contracts in the workspace's ``pyproject.toml``.
"""
