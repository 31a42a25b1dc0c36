"""pgquartz's runner: the job engine and the ``pgquartz`` command line.

The runner reads a PgQuartz job file, plans it, runs its steps and checks, and
reports. It must start fast and run anywhere (a VM, a laptop, a Job pod), so it
never imports the operator, kopf or a Kubernetes client.
"""

__version__ = "0.1.0"
