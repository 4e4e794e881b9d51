"""Scans in: batch listing, readers, voxelizing, the demo batch."""
