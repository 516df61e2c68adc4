"""File formats: the .hsic container and its metadata, cube files and band lists, BSQ,
manifests, CSV tables, atomic writes and path checks."""
