"""The etcd lock: one runner of a job at a time across nodes or pods, safe under failures."""
