"""Scale-out: record archives reduced on a Dask cluster (placeholder; being built)."""
