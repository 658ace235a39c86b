"""Detection-quality benchmark: labelled scenarios, replay through the scorer's code, scoring."""
