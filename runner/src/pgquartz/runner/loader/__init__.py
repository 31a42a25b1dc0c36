"""Job files → validated, planned jobs; every problem reported with file, line and key path."""

from pgquartz.runner.loader.load import LoadedJob, job_name, load, load_text

__all__ = ["LoadedJob", "job_name", "load", "load_text"]
