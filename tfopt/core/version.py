"""tfopt's version: recorded in every report, resume key and deploy bundle."""

__version__ = "0.3.0"
