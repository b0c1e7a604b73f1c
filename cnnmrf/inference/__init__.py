"""Inference stage: the pose model on crops and on photos (person search, crops, drawing); never imports training."""
