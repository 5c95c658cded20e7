"""Training: the only place the networks are defined (torch). Imports `jal_deploy` for labels and data."""
