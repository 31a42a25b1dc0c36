"""How taking or holding the lock can fail, importable without loading the etcd client."""


class LockNotAcquired(Exception):
    """etcd could not be used to take the lock (unreachable, refused); nothing ran."""


class LockLost(Exception):
    """The lease was lost while the steps ran; they were stopped."""


class EtcdUnavailable(Exception):
    """etcd cannot be reached (yet); the message is safe to show. Worth retrying."""


class EtcdRefused(EtcdUnavailable):
    """etcd refused us, or we cannot even ask (credentials, TLS files): retrying cannot help."""
