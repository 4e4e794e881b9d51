"""voxclust: group 3D scans by shape. All real logic, no Prefect: one room (package) per concern."""
