"""Datasets: download and extraction, preparation, synthetic cubes."""
