"""Datasets: band lists, download and extraction, preparation, synthetic cubes."""
