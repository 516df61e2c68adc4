"""File formats: the .hsic container and its metadata, cube files, BSQ, manifests, atomic
writes and path checks."""
