"""tfopt's version: recorded in every report, resume key and deploy bundle."""

__version__ = "0.2.0"
