"""The voxel store: the dataset (zarr grids + manifest), ingest of a batch, import of grids, the inbox."""
