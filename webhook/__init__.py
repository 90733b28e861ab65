"""costgate: prices GPU workloads at admission."""

__version__ = "0.1.0"
