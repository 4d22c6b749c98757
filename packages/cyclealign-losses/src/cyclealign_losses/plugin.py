"""Plugin registration for the losses."""
