"""Training loops: the LineRWKV predictor and the gdn transform codecs."""
