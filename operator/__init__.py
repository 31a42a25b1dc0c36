"""pgquartz's Kubernetes operator (kopf): turns PgQuartzJob resources into ConfigMaps and CronJobs.

Only a package for now; the operator itself is built on top of the runner's
model (:mod:`pgquartz.runner.model`), the one part of the runner it may import.
"""
