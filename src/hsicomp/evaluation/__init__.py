"""Evaluation: encoding and verifying shards, metrics, aggregation, BD-rate, reference rates."""
