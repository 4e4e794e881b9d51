"""Evaluation of an embedding: PCA, k-means and its elbow, PIC, metrics, scores."""
