"""Transforms without learned weights: colour, frequency filters, shuffles, edges, HOG, SIFT."""
